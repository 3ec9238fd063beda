/* Compile xxHash (vendored, BSD-2-Clause, see LICENSE.xxhash) inline into each kernel. */
#ifndef CARTRIDGE_XXHASH_IMPL_H
#define CARTRIDGE_XXHASH_IMPL_H
#define XXH_INLINE_ALL
#include "xxhash.h"
#endif
