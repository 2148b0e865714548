#include "upmon/clock.h"

#include <errno.h>
#include <time.h>

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * UPM_NS_PER_S + ts.tv_nsec;
}

int64_t upm_clock_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

int64_t upm_clock_real_ns(void)
{
    return clock_ns(CLOCK_REALTIME);
}

void upm_clock_sleep_ms(int64_t ms, const volatile int *stop)
{
    int64_t end = upm_clock_mono_ns() + ms * UPM_NS_PER_MS;
    for (;;) {
        if (stop && *stop)
            return;
        int64_t left = end - upm_clock_mono_ns();
        if (left <= 0)
            return;
        /* Wake at least every 100 ms so a stop flag is noticed promptly. */
        if (left > 100 * UPM_NS_PER_MS)
            left = 100 * UPM_NS_PER_MS;
        struct timespec ts = {.tv_sec = left / UPM_NS_PER_S, .tv_nsec = left % UPM_NS_PER_S};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            if (stop && *stop)
                return;
        }
    }
}
