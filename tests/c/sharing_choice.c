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

/* Runs ``jobs`` jobs from time *now on; returns how many ran alone. */
static long run(rnnfast_sharing *s, const machine_t *machine, long jobs, double *now)
{
    long alone_jobs = 0;
    for (long i = 0; i < jobs; i++) {
        int alone = rnnfast_sharing_alone(s, rnnfast_sharing_timing(s) ? *now : -1.0);
        if (alone) {
            alone_jobs++;
            *now += 1e-6 * machine->alone_us;
        } else {
            rnnfast_sharing_helped(s, machine->helpers_come);
            *now += 1e-6 * (machine->helpers_come ? machine->shared_us : machine->alone_us);
        }
    }
    return alone_jobs;
}

static int failures = 0;

static void expect(int condition, const char *what)
{
    if (!condition) {
        printf("FAILED: %s\n", what);
        failures++;
    }
}

/* Jobs of one trial at most: its blocks, each settled and timed, plus one. */
#define TRIAL_JOBS (2 * RNNFAST_SHARING_ROUNDS * (RNNFAST_SHARING_SETTLE + RNNFAST_SHARING_TIMED + 1))

int main(void)
{
    rnnfast_sharing s;
    double now = 100.0;
    const machine_t near = {1.0, 2.0, 1}, far = {2.6, 1.6, 1}, marginal = {0.97, 1.0, 1};
    const machine_t no_helpers = {1.0, 2.0, 0};

    /* Where sharing pays it stays; the trial runs at most half its jobs alone. */
    rnnfast_sharing_init(&s);
    expect(run(&s, &near, RNNFAST_SHARING_WARMUP - 1, &now) == 0, "shared before the trial");
    long alone = run(&s, &near, TRIAL_JOBS, &now);
    expect(s.block < 0 && s.tried, "the trial ended");
    expect(!s.alone, "sharing chosen where it pays");
    expect(alone >= RNNFAST_SHARING_ROUNDS * RNNFAST_SHARING_TIMED && alone <= TRIAL_JOBS / 2,
           "the trial timed both ways");
    expect(run(&s, &near, RNNFAST_SHARING_TRUST - 1 - s.jobs, &now) == 0,
           "shared until the next trial");

    /* Cores far apart: alone from the next trial on, until sharing pays again. */
    run(&s, &far, 1 + TRIAL_JOBS, &now);
    expect(s.alone && s.block < 0, "alone chosen where sharing costs more");
    long until_trial = RNNFAST_SHARING_TRUST - 1 - s.jobs;
    expect(run(&s, &far, until_trial, &now) == until_trial, "alone until the next trial");
    run(&s, &near, 1 + TRIAL_JOBS, &now);
    expect(!s.alone, "sharing chosen again once it pays");

    /* Long jobs: a trial every RNNFAST_SHARING_TRUST_SECONDS, long before
     * RNNFAST_SHARING_TRUST jobs. */
    const machine_t far_long = {100.0, 60.0, 1}, near_long = {30.0, 60.0, 1};
    rnnfast_sharing_init(&s);
    run(&s, &far_long, RNNFAST_SHARING_WARMUP + TRIAL_JOBS, &now);
    expect(s.alone && s.block < 0, "alone chosen for long jobs where sharing costs more");
    long jobs = (long)(RNNFAST_SHARING_TRUST_SECONDS / 60e-6) + RNNFAST_SHARING_CLOCK_JOBS;
    run(&s, &near_long, jobs + TRIAL_JOBS, &now);
    expect(!s.alone, "long jobs tried again after RNNFAST_SHARING_TRUST_SECONDS");

    /* Sharing must win by the margin. */
    rnnfast_sharing_init(&s);
    run(&s, &marginal, RNNFAST_SHARING_WARMUP + TRIAL_JOBS, &now);
    expect(s.tried && s.alone, "alone where sharing saves less than the margin");

    /* Helpers that never come: alone. */
    rnnfast_sharing_init(&s);
    run(&s, &no_helpers, RNNFAST_SHARING_WARMUP + TRIAL_JOBS
                         + RNNFAST_SHARING_ROUNDS * RNNFAST_SHARING_MAX_SETTLE, &now);
    expect(s.tried && s.alone && s.block < 0, "alone where the helpers never come");

    /* Jobs far apart in time (the caller does other work between them): the trial
     * gives up and the choice stays. */
    const machine_t sparse = {1000.0, 500.0, 1};
    rnnfast_sharing_init(&s);
    run(&s, &sparse, RNNFAST_SHARING_WARMUP + 2 * TRIAL_JOBS, &now);
    expect(s.tried && !s.alone && s.block < 0, "the choice kept when no block can be timed");

    /* One slow job in a block (an interruption) restarts only that block. */
    rnnfast_sharing_init(&s);
    run(&s, &far, RNNFAST_SHARING_WARMUP + 5, &now);
    now += 0.01;
    run(&s, &far, TRIAL_JOBS, &now);
    expect(s.tried && s.alone && s.restarts == 1, "a block restarted after a gap");

    if (failures)
        return 1;
    printf("ok\n");
    return 0;
}
