# The audit log's record ring (ringbuf.pyx): the C ring and its slot header, declared once.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "ringbuf_impl.h" nogil:
    ctypedef struct rb_slot_head:
        uint64_t seq
        uint32_t len
    ctypedef struct rb_ring:
        uint64_t capacity
        uint64_t slot_size
        uint64_t stride
        uint64_t waits
    int rb_init(rb_ring *r, uint64_t capacity, uint64_t slot_size)
    void rb_free(rb_ring *r)
    uint64_t rb_reserve(rb_ring *r, int wait, int *ok)
    void rb_publish(rb_ring *r, uint64_t pos, const void *data, uint32_t len)
    const unsigned char *rb_peek(rb_ring *r, uint64_t *ticket, uint32_t *len)
    void rb_release(rb_ring *r)
    uint64_t rb_pending(rb_ring *r)
    uint64_t rb_bench(rb_ring *r, uint64_t n, uint32_t len, int consume)


cdef class Ring:
    cdef rb_ring ring
    cdef bint ready
    cdef uint64_t push_c(self, const unsigned char *data, uint32_t n) except? 0xFFFFFFFFFFFFFFFF nogil
