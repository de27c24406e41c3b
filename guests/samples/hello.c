/* hello: prints one line through each of the three ways Xen guests print
 * (console_io, port 0xE9, the PV console ring), then powers off. */
#include "lib.h"

static void say(const char *how, long rc)
{
    if (rc < 0)
        printf("hello: %s write failed: %ld\n", how, rc);
}

int main(void)
{
    static const char io[] = "Hello from xenode guest (console_io)\n";
    static const char e9[] = "Hello from xenode guest (port 0xE9)\n";
    static const char pv[] = "Hello from xenode guest (PV console)\n";

    if (!xen_present) {
        e9_write(e9, sizeof(e9) - 1);
        return 0;
    }
    say("console_io", console_io_write(io, sizeof(io) - 1));
    e9_write(e9, sizeof(e9) - 1);
    if (pvcons_write(pv, sizeof(pv) - 1) < 0) {
        static const char m[] = "hello: no PV console (HVM_PARAM_CONSOLE_PFN/EVTCHN unset)\n";
        e9_write(m, sizeof(m) - 1);
    }
    return 0;   /* -> SCHEDOP_shutdown(SHUTDOWN_poweroff), after the PV ring drains */
}
