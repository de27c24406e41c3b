/* idle: prints one line, then blocks in SCHEDOP_block with no timer and no
 * event channel bound, so it stays blocked until the toolstack destroys it.
 * Used to count how many idle domains one host holds. */
#include "lib.h"

int main(void)
{
    printf("idle: blocking\n");
    for (;;)
        HYPERVISOR_sched_op(SCHEDOP_block, 0);
    return 0;
}
