/* Stress test of csrc/rnnfast_helpers.h: three threads hand out jobs of 2-9 parts,
 * at 2-4 threads, 200000 jobs each, pausing now and then so that the helpers fall
 * asleep. Every part adds its own value to its own counter; the totals must come out
 * exact. Exit status 0 and "ok" on success. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "rnnfast_helpers.h"

#define CALLERS 3
#define JOBS 200000
#define MAX_PARTS 9

typedef struct {
    long *totals;   /* (MAX_PARTS,) one counter per part */
    long value;
} job_t;

static void add_part(void *job_pointer, int part)
{
    job_t *job = job_pointer;
    job->totals[part] += job->value + part;
}

static void *caller(void *index)
{
    long id = (long)index;
    long totals[MAX_PARTS] = {0}, expected[MAX_PARTS] = {0};
    for (int i = 0; i < JOBS; i++) {
        int parts = 2 + i % 6 + (int)(id % 2);
        job_t job = {totals, i};
        rnnfast_run_parts(add_part, &job, parts, 2 + i % 3, i % 4);
        for (int part = 0; part < parts; part++)
            expected[part] += i + part;
        if (i % 2000 == 0)
            usleep(150 + i % 100);   /* longer than the helpers spin */
    }
    for (int part = 0; part < MAX_PARTS; part++)
        if (totals[part] != expected[part]) {
            printf("caller %ld, part %d: %ld, expected %ld\n", id, part, totals[part],
                   expected[part]);
            exit(1);
        }
    return NULL;
}

int main(void)
{
    pthread_t callers[CALLERS];
    for (long i = 0; i < CALLERS; i++)
        pthread_create(&callers[i], NULL, caller, (void *)i);
    for (int i = 0; i < CALLERS; i++)
        pthread_join(callers[i], NULL);
    if (rnnfast_helpers_running() < 1) {
        printf("no helper thread started\n");
        return 1;
    }
    printf("ok\n");
    return 0;
}
