/* A bounded multi-producer single-consumer ring of fixed-size slots (C11 atomics).
 *
 * Each slot carries a sequence number (D. Vyukov's bounded queue): a producer takes ticket
 * `pos` by compare-and-swap on `head` once slot `pos % capacity` is free (its sequence equals
 * pos), copies its bytes in and publishes with sequence pos + 1; the single consumer takes slot
 * `tail % capacity` once its sequence is tail + 1 and frees it with sequence tail + capacity.
 * Tickets are handed out in one total order and the consumer reads them in that order, so
 * nothing is dropped or reordered. A producer that finds the ring full waits (spins briefly,
 * then yields the CPU, then sleeps) until the consumer frees a slot.
 */
#ifndef CARTRIDGE_RINGBUF_IMPL_H
#define CARTRIDGE_RINGBUF_IMPL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

typedef struct {
    _Atomic uint64_t seq;       /* ticket + 1: full; ticket + capacity: free for that ticket */
    uint32_t len;               /* bytes used in data */
    uint32_t _pad;
} rb_slot_head;

typedef struct {
    _Atomic uint64_t head;      /* next ticket to hand out (producers) */
    char _pad1[56];
    _Atomic uint64_t tail;      /* next ticket to read (the consumer) */
    char _pad2[56];
    _Atomic uint64_t waits;     /* times a producer found the ring full */
    uint64_t capacity;          /* a power of two */
    uint64_t slot_size;         /* payload bytes per slot */
    uint64_t stride;            /* bytes per slot: header + payload, 8-aligned */
    unsigned char *slots;
} rb_ring;

static inline rb_slot_head *rb_slot(rb_ring *r, uint64_t pos) {
    return (rb_slot_head *)(r->slots + (pos & (r->capacity - 1)) * r->stride);
}

static int rb_init(rb_ring *r, uint64_t capacity, uint64_t slot_size) {
    uint64_t i;
    r->capacity = capacity;
    r->slot_size = slot_size;
    r->stride = (sizeof(rb_slot_head) + slot_size + 7) & ~(uint64_t)7;
    r->slots = (unsigned char *)calloc(capacity, r->stride);
    if (!r->slots) return -1;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    atomic_init(&r->waits, 0);
    for (i = 0; i < capacity; i++) atomic_init(&rb_slot(r, i)->seq, i);
    return 0;
}

static void rb_free(rb_ring *r) {
    free(r->slots);
    r->slots = NULL;
}

static void rb_backoff(unsigned *spins) {
    struct timespec ts = {0, 50000};          /* 50 µs */
    if (*spins < 64) {
        (*spins)++;
    } else if (*spins < 128) {
        (*spins)++;
        sched_yield();
    } else {
        nanosleep(&ts, NULL);
    }
}

/* Reserve a slot (waiting while the ring is full); returns its ticket. */
static uint64_t rb_reserve(rb_ring *r, int wait, int *ok) {
    uint64_t pos = atomic_load_explicit(&r->head, memory_order_relaxed);
    unsigned spins = 0;
    int counted = 0;
    for (;;) {
        rb_slot_head *s = rb_slot(r, pos);
        uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            if (atomic_compare_exchange_weak_explicit(&r->head, &pos, pos + 1,
                                                      memory_order_relaxed, memory_order_relaxed)) {
                *ok = 1;
                return pos;
            }
        } else if (dif < 0) {                  /* full: the consumer has not freed it yet */
            if (!wait) { *ok = 0; return 0; }
            if (!counted) { atomic_fetch_add_explicit(&r->waits, 1, memory_order_relaxed); counted = 1; }
            rb_backoff(&spins);
            pos = atomic_load_explicit(&r->head, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&r->head, memory_order_relaxed);
        }
    }
}

static inline void rb_publish(rb_ring *r, uint64_t pos, const void *data, uint32_t len) {
    rb_slot_head *s = rb_slot(r, pos);
    s->len = len;
    memcpy((unsigned char *)(s + 1), data, len);
    atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
}

/* Consumer: the next published slot's data and length, or NULL if none is ready. */
static inline const unsigned char *rb_peek(rb_ring *r, uint64_t *ticket, uint32_t *len) {
    uint64_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    rb_slot_head *s = rb_slot(r, pos);
    uint64_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    if (seq != pos + 1) return NULL;
    *ticket = pos;
    *len = s->len;
    return (const unsigned char *)(s + 1);
}

static inline void rb_release(rb_ring *r) {
    uint64_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    rb_slot_head *s = rb_slot(r, pos);
    atomic_store_explicit(&s->seq, pos + r->capacity, memory_order_release);
    atomic_store_explicit(&r->tail, pos + 1, memory_order_release);
}

static inline uint64_t rb_pending(rb_ring *r) {
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
    return h - t;
}

/* Benchmark / stress: `n` pushes of `len` bytes from C by one producer while the caller's
 * consumer is elsewhere; with consume != 0 the same thread drains whenever the ring fills. */
static uint64_t rb_bench(rb_ring *r, uint64_t n, uint32_t len, int consume) {
    unsigned char buf[64];
    uint64_t i, sum = 0, t;
    uint32_t got;
    int ok;
    const unsigned char *p;
    memset(buf, 0xAB, sizeof buf);
    if (len > sizeof buf) len = sizeof buf;
    for (i = 0; i < n; i++) {
        if (consume && rb_pending(r) == r->capacity) {
            while ((p = rb_peek(r, &t, &got)) != NULL) { sum += p[0] + t; rb_release(r); }
        }
        *(uint64_t *)buf = i;
        t = rb_reserve(r, 1, &ok);
        rb_publish(r, t, buf, len);
    }
    if (consume) {
        while ((p = rb_peek(r, &t, &got)) != NULL) { sum += p[0] + t; rb_release(r); }
    }
    return sum;
}

#endif
