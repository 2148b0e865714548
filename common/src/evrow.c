#include "upmon/evrow.h"

#include <string.h>

#include "upmon/clickhouse.h"

#define NS_PER_DAY (86400LL * 1000000000LL)

uint16_t upm_evrow_day(int64_t ts_ns)
{
    /* Floor division: a (rejected upstream, but defined here) negative time
     * belongs to the day before, and clamps to 0. */
    int64_t day = ts_ns / NS_PER_DAY;
    if (ts_ns % NS_PER_DAY < 0)
        day--;
    if (day < 0)
        return 0;
    if (day > UINT16_MAX)
        return UINT16_MAX;
    return (uint16_t)day;
}

static uint16_t sat16(unsigned v)
{
    return v > UINT16_MAX ? UINT16_MAX : (uint16_t)v;
}

static int put_str(struct upm_buf *b, const char *s)
{
    return upm_ch_rb_string(b, s, strlen(s));
}

int upm_evrow_encode(struct upm_buf *b, const struct upm_event *ev, int32_t partition,
                     int64_t offset)
{
    size_t start = b->len;
    int rc = 0;

    rc |= upm_ch_rb_date(b, upm_evrow_day(ev->ts_ns));
    rc |= upm_ch_rb_i64(b, ev->ts_ns);
    rc |= upm_ch_rb_u64(b, ev->item_id);
    rc |= put_str(b, ev->attempt_id);
    rc |= put_str(b, ev->request_id);
    rc |= upm_ch_rb_u8(b, (uint8_t)ev->type); /* enum values are the Enum8 values */
    rc |= upm_ch_rb_u8(b, ev->is_created ? 1 : 0);
    rc |= upm_ch_rb_i64(b, ev->is_created ? ev->up_ts : 0);
    rc |= put_str(b, ev->origin);
    rc |= put_str(b, ev->origin_id);
    /* FixedString(2): exactly two bytes, no length prefix. */
    rc |= upm_buf_append(b, ev->country, 2);
    rc |= upm_ch_rb_u64(b, ev->company_id);
    rc |= upm_ch_rb_u64(b, ev->category_id);
    rc |= upm_buf_put_varuint(b, ev->n_media);
    for (size_t i = 0; i < ev->n_media && rc == 0; i++)
        rc |= ev->media[i] ? put_str(b, ev->media[i]) : upm_ch_rb_string(b, "", 0);
    rc |= upm_ch_rb_u16(b, sat16(ev->media_own));
    rc |= upm_ch_rb_u16(b, sat16(ev->media_external));
    rc |= upm_ch_rb_u16(b, sat16(ev->media_bad));
    rc |= upm_ch_rb_string(b, ev->data ? ev->data : "{}", ev->data ? ev->data_len : 2);
    rc |= upm_ch_rb_u32(b, (uint32_t)partition);
    rc |= upm_ch_rb_u64(b, (uint64_t)offset);
    if (rc != 0) {
        /* Appends are all-or-nothing each, but the row is not: drop it whole. */
        b->len = start;
        if (b->data)
            b->data[start] = '\0';
        return -1;
    }
    return 0;
}
