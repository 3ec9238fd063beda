/* Compile xxHash (vendored, BSD-2-Clause, see LICENSE.xxhash) inline into each kernel.
 *
 * cart_xxh3_64() is XXH3_64bits() with the long-input loop (> 240 bytes) picked at run time:
 * the AVX2 kernel when the CPU has it (about twice the SSE2 speed on 64 KiB chunks), else the
 * baseline one. Same hash either way; the build stays portable (no -mavx2). */
#ifndef CARTRIDGE_XXHASH_IMPL_H
#define CARTRIDGE_XXHASH_IMPL_H
#define XXH_INLINE_ALL
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#  define CART_XXH_AVX2 1
#  define XXH_X86DISPATCH
#  define XXH_DISPATCH_AVX2 1
#  define XXH_TARGET_AVX2 __attribute__((__target__("avx2")))
#  include <immintrin.h>
#endif
#include "xxhash.h"

#ifdef CART_XXH_AVX2
XXH_NO_INLINE XXH_TARGET_AVX2 XXH64_hash_t
cart_xxh3_long_avx2(const void* XXH_RESTRICT input, size_t len)
{
    return XXH3_hashLong_64b_internal(input, len, XXH3_kSecret, sizeof(XXH3_kSecret),
                                      XXH3_accumulate_avx2, XXH3_scrambleAcc_avx2);
}

static int cart_xxh_avx2 = -1;

static inline XXH64_hash_t cart_xxh3_64(const void* input, size_t len)
{
    if (len > XXH3_MIDSIZE_MAX) {
        if (cart_xxh_avx2 < 0) {
            __builtin_cpu_init();
            cart_xxh_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
        }
        if (cart_xxh_avx2)
            return cart_xxh3_long_avx2(input, len);
    }
    return XXH3_64bits(input, len);
}
#else
#  define cart_xxh3_64 XXH3_64bits
#endif
#endif
