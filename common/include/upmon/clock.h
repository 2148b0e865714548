/*
 * clock — the two clocks upmon uses, never mixed.
 *
 * Monotonic time measures intervals (timeouts, lease expiry, backoff); it
 * does not jump when NTP steps the wall clock. Real time stamps events and
 * log lines. Both in nanoseconds as int64 (good until 2262).
 */
#ifndef UPMON_CLOCK_H
#define UPMON_CLOCK_H

#include <stdint.h>

#define UPM_NS_PER_MS INT64_C(1000000)
#define UPM_NS_PER_S  INT64_C(1000000000)

int64_t upm_clock_mono_ns(void);
int64_t upm_clock_real_ns(void);
/* Sleep for ms milliseconds, resuming after signals until the time is up
 * unless *stop becomes non-zero (stop may be NULL). */
void upm_clock_sleep_ms(int64_t ms, const volatile int *stop);

#endif
