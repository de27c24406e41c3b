/* shutdown-<reason>: prints which reason it uses, then SCHEDOP_shutdown with
 * it.  Built once per SHUTDOWN_* code (REASON is set by the Makefile). */
#include "lib.h"

#ifndef REASON
#error "build with -DREASON=SHUTDOWN_<reason>"
#endif

int main(void)
{
    printf("shutdown-%s: calling SCHEDOP_shutdown(SHUTDOWN_%s = %d)\n",
           shutdown_reason_name(REASON), shutdown_reason_name(REASON), REASON);
    shutdown(REASON);
}
