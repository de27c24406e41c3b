/* crash: triple-faults on purpose.  Loads an empty IDT and executes ud2: #UD
 * cannot be delivered, nor can the resulting #DF, so the CPU triple-faults
 * and the hypervisor must crash the domain (and only the domain). */
#include "lib.h"

int main(void)
{
    printf("crash: loading an empty IDT and executing ud2 (expect a triple fault)\n");
    pvcons_flush();
    struct { uint16_t limit; uint64_t base; } __attribute__((packed)) empty = { 0, 0 };
    asm volatile ("lidt %0; ud2" :: "m" (empty));
    printf("crash: still alive after ud2?\n");
    return 1;
}
