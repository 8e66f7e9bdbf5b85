/* blkid-util.h: libblkid's probe as a cleanup variable, for the modules that probe (partition.c, probe.c).
 */
#pragma once

#include <blkid/blkid.h>

#include "macro.h"

static inline void blkid_free_probep(blkid_probe *pr)
{
        if (*pr)
                blkid_free_probe(*pr);
}
#define _cleanup_blkid_probe_ _cleanup_(blkid_free_probep)
