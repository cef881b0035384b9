/* Test of csrc/rnnfast_sharing.h on made-up timings: jobs whose cost depends on
 * whether they were shared, fed through rnnfast_sharing_alone the way
 * rnnfast_run_parts does. Exit status 0 and "ok" on success. */
#include <stdio.h>
#include <stdlib.h>

#include "rnnfast_sharing.h"

typedef struct {
    double shared_us, alone_us;   /* a job's cost, start to start, in each way */
    int helpers_come;             /* whether the helpers take part in shared jobs */
} machine_t;

static double now = 100.0;        /* seconds */

/* Runs one job; returns whether it ran alone. */
static int job(rnnfast_sharing *s, const machine_t *machine)
{
    int alone = rnnfast_sharing_alone(s, rnnfast_sharing_timing(s) ? now : -1.0);
    if (!alone)
        rnnfast_sharing_helped(s, machine->helpers_come);
    now += 1e-6 * (alone || !machine->helpers_come ? machine->alone_us : machine->shared_us);
    return alone;
}

/* Runs jobs until ``count`` more trials have ended (at most a million jobs);
 * returns how many ran alone. */
static long trials(rnnfast_sharing *s, const machine_t *machine, int count)
{
    long alone = 0;
    for (int target = s->tried + count, i = 0; s->tried < target && i < 1000000; i++)
        alone += job(s, machine);
    return alone;
}

/* Runs ``jobs`` jobs; returns how many ran alone. */
static long jobs(rnnfast_sharing *s, const machine_t *machine, long count)
{
    long alone = 0;
    for (long i = 0; i < count; i++)
        alone += job(s, machine);
    return alone;
}

static int failures = 0;

static void expect(int condition, const char *what)
{
    if (!condition) {
        printf("FAILED: %s\n", what);
        failures++;
    }
}

int main(void)
{
    rnnfast_sharing s;
    const machine_t near = {1.0, 2.0, 1}, far = {2.6, 1.6, 1}, marginal = {0.97, 1.0, 1};

    /* Where sharing pays it stays; a trial runs about a block of each round alone. */
    rnnfast_sharing_init(&s);
    expect(jobs(&s, &near, RNNFAST_SHARING_WARMUP - 1) == 0, "shared before the first trial");
    long alone = trials(&s, &near, 1);
    expect(!s.alone && !s.doubted && s.tried == 1, "sharing kept where it pays");
    expect(alone >= RNNFAST_SHARING_ROUNDS * RNNFAST_SHARING_TIMED
           && alone <= RNNFAST_SHARING_ROUNDS * (RNNFAST_SHARING_TIMED + RNNFAST_SHARING_SETTLE + 1),
           "a trial runs a block alone in each round");
    long until_trial = RNNFAST_SHARING_TRUST - 1 - s.jobs;
    expect(jobs(&s, &near, until_trial) == 0, "shared until the next trial is due");

    /* Cores far apart: one trial only doubts, the next (soon after) changes the
     * choice; alone then until a trial finds sharing better twice. */
    trials(&s, &far, 1);
    expect(!s.alone && s.doubted, "one trial against the choice only doubts it");
    expect(s.jobs == 0 && rnnfast_sharing_due(&s) == RNNFAST_SHARING_WARMUP,
           "a doubted choice is tried again soon");
    trials(&s, &far, 1);
    expect(s.alone && !s.doubted, "alone chosen after two trials where sharing costs more");
    until_trial = RNNFAST_SHARING_TRUST - 1 - s.jobs;
    expect(jobs(&s, &far, until_trial) == until_trial, "alone until the next trial is due");
    trials(&s, &near, 1);
    expect(s.alone && s.doubted, "one trial for sharing only doubts alone");
    trials(&s, &far, 1);
    expect(s.alone && !s.doubted, "a trial that agrees again clears the doubt");
    trials(&s, &near, 2);
    expect(!s.alone, "sharing chosen again after two trials where it pays");

    /* Long jobs: a trial every RNNFAST_SHARING_TRUST_SECONDS, long before
     * RNNFAST_SHARING_TRUST jobs. */
    const machine_t far_long = {100.0, 60.0, 1}, near_long = {30.0, 60.0, 1};
    rnnfast_sharing_init(&s);
    trials(&s, &far_long, 2);
    expect(s.alone, "alone chosen for long jobs where sharing costs more");
    double started = now;
    trials(&s, &near_long, 2);
    expect(!s.alone && now - started < 3 * RNNFAST_SHARING_TRUST_SECONDS,
           "long jobs tried again after RNNFAST_SHARING_TRUST_SECONDS");

    /* Sharing must win by the margin. */
    rnnfast_sharing_init(&s);
    trials(&s, &marginal, 2);
    expect(s.tried == 2 && s.alone, "alone where sharing saves less than the margin");

    /* Helpers that never come: alone. */
    const machine_t no_helpers = {1.0, 2.0, 0};
    rnnfast_sharing_init(&s);
    trials(&s, &no_helpers, 2);
    expect(s.tried == 2 && s.alone, "alone where the helpers never come");

    /* Jobs far apart in time (the caller does other work between them): the trial
     * gives up, the choice stays. */
    const machine_t sparse = {1000.0, 500.0, 1};
    rnnfast_sharing_init(&s);
    trials(&s, &sparse, 3);
    expect(s.tried == 3 && !s.alone && !s.doubted && s.restarts > RNNFAST_SHARING_MAX_RESTARTS,
           "the choice kept where no block can be timed");

    /* Helpers that stall now and then (another thread took their core): the shared
     * blocks they disturb start again, and the choice is what the others show. */
    rnnfast_sharing_init(&s);
    jobs(&s, &near, RNNFAST_SHARING_WARMUP - 1);
    for (int i = 0; s.tried < 1 && i < 100000; i++) {
        int shared = !job(&s, &near);
        if (shared && i % 40 == 10) {         /* a stall: a slow job, then disturbed */
            now += 100e-6;
            rnnfast_sharing_disturbed(&s);
        }
    }
    expect(s.tried == 1 && !s.alone && !s.doubted && s.restarts >= 1,
           "stalls restart shared blocks and leave sharing chosen");

    /* One slow job in a trial (an interruption) restarts only its block. */
    rnnfast_sharing_init(&s);
    jobs(&s, &far, RNNFAST_SHARING_WARMUP + 5);
    now += 0.01;
    trials(&s, &far, 1);
    expect(s.tried == 1 && s.doubted && s.restarts == 1, "a block restarted after a gap");

    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
