/* rnnfast: whether handing parts of a job to the helper threads pays, judged by
 * timing (used by rnnfast_helpers.h; the logic alone, with times passed in).
 *
 * The thresholds that send a step to the helpers (a stream's step, a small batch's
 * time loop) were measured where a core sees another's write after 0.04-0.07 us.
 * Cores further apart, as on a VM whose two vCPUs the host moved to distant cores
 * (measured on the project's 2-core VM: a round trip between two threads grew from
 * 0.07-0.14 to 0.33-0.48 us), make each hand-over and each cache line of h and of
 * the gates that crosses over several times dearer, and a shared step can then take
 * longer than the caller alone (there: an RNN stream step at H = 128 2.6 us shared,
 * 1.65 alone; LSTM inference at B = 1, H = 128, T = 100 0.52 ms against 0.39).
 *
 * So each kind of job (a part function and a size its caller gives) keeps a
 * choice, shared or alone, and tries both now and then: a trial times _ROUNDS
 * blocks of each way, in turns, each block _TIMED consecutive jobs from the start
 * of the first to the start of the job after the last, so that whatever the caller
 * does between its jobs (the gate pass, which reads the parts the helpers wrote, or
 * a stream's return to Python) counts too. A block starts timing after _SETTLE jobs
 * run its way, a shared one only after a job the helpers took part in (a helper
 * woken from sleep takes tens of microseconds to come). A trial finds for sharing
 * where its fastest block beats the fastest alone by _MARGIN, and for alone where
 * not or where the helpers never came; the choice changes when two trials in a row
 * find against it (the second soon after the first), as a trial can catch a burst
 * of other work on the machine (on that VM about one in ten, where sharing halved
 * a step's time, found for alone). A gap of more than _MAX_GAP_US between two
 * timed jobs (the caller did something else) restarts the block, and so does a
 * stall of the helpers in a shared block (a helper lost its core to another thread,
 * such as another library's pool still spinning after its call: the stall rule of
 * rnnfast_helpers.h handles that); a trial that restarts blocks more than
 * _MAX_RESTARTS times ends with the choice as it was.
 * Trials come after the first _WARMUP jobs, then every _TRUST jobs or
 * _TRUST_SECONDS, whichever comes first (the time is read every _CLOCK_JOBS jobs):
 * that VM moved its vCPUs every few seconds at times. A trial runs about 40 jobs
 * the slower way. A job's parts compute the same values wherever they run, so the
 * choice never changes a result. (_NAME: RNNFAST_SHARING_NAME.)
 */
#ifndef RNNFAST_SHARING_H
#define RNNFAST_SHARING_H

#include <stddef.h>

#define RNNFAST_SHARING_WARMUP 64
#define RNNFAST_SHARING_TRUST 20000
#define RNNFAST_SHARING_TRUST_SECONDS 0.1
#define RNNFAST_SHARING_CLOCK_JOBS 256
#define RNNFAST_SHARING_ROUNDS 3
#define RNNFAST_SHARING_SETTLE 2
#define RNNFAST_SHARING_TIMED 12
#define RNNFAST_SHARING_MAX_SETTLE 64   /* jobs a shared block waits for the helpers */
#define RNNFAST_SHARING_MAX_GAP_US 200
#define RNNFAST_SHARING_MAX_RESTARTS 8
#define RNNFAST_SHARING_MARGIN 0.05

typedef struct {
    int alone;            /* the choice: every part on the caller */
    int tried;            /* trials ended */
    int doubted;          /* the last trial found against the choice */
    long jobs;            /* jobs since the last trial ended (or since the first) */
    double tried_at;      /* when the last trial ended */
    /* the trial: */
    int block;            /* block running (even: shared, odd: alone); -1: no trial */
    int settled;          /* jobs of the block run before its timing */
    int helped;           /* the last job had the helpers' help */
    int timed;            /* jobs of the block started since its timing began */
    int restarts;         /* blocks restarted after a gap */
    double started;       /* when the block's first timed job started */
    double last;          /* when the last job started */
    double best[2];       /* the fastest block: [shared, alone], seconds */
} rnnfast_sharing;

static inline void rnnfast_sharing_init(rnnfast_sharing *s)
{
    s->alone = 0;
    s->tried = 0;
    s->doubted = 0;
    s->jobs = 0;
    s->block = -1;
}

/* Jobs after which the next trial is due. */
static inline long rnnfast_sharing_due(const rnnfast_sharing *s)
{
    return s->tried && !s->doubted ? RNNFAST_SHARING_TRUST : RNNFAST_SHARING_WARMUP;
}

/* Whether the next job's start time is needed (a trial is on or may begin). */
static inline int rnnfast_sharing_timing(const rnnfast_sharing *s)
{
    long next = s->jobs + 1;
    return s->block >= 0 || next >= rnnfast_sharing_due(s)
        || (s->tried && next % RNNFAST_SHARING_CLOCK_JOBS == 0);
}

static inline void rnnfast_sharing_restart_block(rnnfast_sharing *s)
{
    s->settled = 0;
    s->timed = 0;
}

/* Ends the trial at ``now``; ``decide``: with a choice from its blocks (else it
 * stays). */
static inline void rnnfast_sharing_end_trial(rnnfast_sharing *s, int decide, double now)
{
    double shared = s->best[0], alone = s->best[1];
    if (decide && alone < 1e300) {
        /* shared never timed: the helpers never came */
        int verdict = !(shared <= (1.0 - RNNFAST_SHARING_MARGIN) * alone);
        if (verdict != s->alone && s->doubted)
            s->alone = verdict;
        s->doubted = verdict != s->alone;
    }
    s->block = -1;
    s->jobs = 0;
    s->tried++;
    s->tried_at = now;
}

/* Moves the trial to its next block at ``now``, or ends it after the last. */
static inline void rnnfast_sharing_next_block(rnnfast_sharing *s, double now)
{
    if (++s->block == 2 * RNNFAST_SHARING_ROUNDS)
        rnnfast_sharing_end_trial(s, 1, now);
    else
        rnnfast_sharing_restart_block(s);
}

/* Called as a job of this kind starts, at ``now`` seconds (read only where
 * rnnfast_sharing_timing says it is needed): whether the job runs on the caller
 * alone. */
static inline int rnnfast_sharing_alone(rnnfast_sharing *s, double now)
{
    if (s->block < 0) {
        long jobs = ++s->jobs;
        if (jobs < rnnfast_sharing_due(s)
                && !(s->tried && jobs % RNNFAST_SHARING_CLOCK_JOBS == 0
                     && now - s->tried_at >= RNNFAST_SHARING_TRUST_SECONDS))
            return s->alone;
        s->block = 0;   /* this job starts a trial */
        s->restarts = 0;
        s->helped = 0;
        s->best[0] = s->best[1] = 1e300;
        rnnfast_sharing_restart_block(s);
    }
    if (s->timed > 0) {   /* this start ends the last timed job */
        if (now - s->last > 1e-6 * RNNFAST_SHARING_MAX_GAP_US) {
            if (++s->restarts > RNNFAST_SHARING_MAX_RESTARTS) {
                rnnfast_sharing_end_trial(s, 0, now);
                return s->alone;
            }
            rnnfast_sharing_restart_block(s);
        } else if (s->timed == RNNFAST_SHARING_TIMED) {
            double seconds = now - s->started;
            if (seconds < s->best[s->block % 2])
                s->best[s->block % 2] = seconds;
            rnnfast_sharing_next_block(s, now);
            if (s->block < 0)
                return s->alone;
        }
    }
    int alone = s->block % 2;
    if (s->timed > 0) {
        s->timed++;
    } else if (s->settled >= RNNFAST_SHARING_SETTLE && (alone || s->helped)) {
        s->started = now;
        s->timed = 1;
    } else if (++s->settled > RNNFAST_SHARING_MAX_SETTLE) {
        rnnfast_sharing_next_block(s, now);   /* a shared block the helpers never joined */
        if (s->block < 0)
            return s->alone;
        alone = s->block % 2;
        s->settled = 1;
    }
    s->last = now;
    return alone;
}

/* Called where a helper lost its core to another thread (the caller then runs jobs
 * alone for a while, rnnfast_helpers.h): a shared block being timed would measure
 * that, not how far apart the cores are, and starts again (no-op for a NULL ``s``). */
static inline void rnnfast_sharing_disturbed(rnnfast_sharing *s)
{
    if (s != NULL && s->block >= 0 && s->block % 2 == 0) {
        s->helped = 0;
        if (s->timed > 0 && ++s->restarts > RNNFAST_SHARING_MAX_RESTARTS)
            rnnfast_sharing_end_trial(s, 0, s->last);
        else
            rnnfast_sharing_restart_block(s);
    }
}

/* Called as a job offered to the helpers ends: whether a helper ran a part of it
 * (no-op for a NULL ``s``). */
static inline void rnnfast_sharing_helped(rnnfast_sharing *s, int helped)
{
    if (s != NULL)
        s->helped = helped;
}

#endif /* RNNFAST_SHARING_H */
