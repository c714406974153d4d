/* Exception reports and interrupt dispatch for the stubs in boot.S. */
#include "lapic.h"
#include "runtime.h"

static irq_handler_t irq_handlers[256];

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
};

void irq_set_handler(unsigned vector, irq_handler_t handler)
{
    if (vector >= 32 && vector < 256)
        irq_handlers[vector] = handler;
}

void trap_dispatch(struct trap_frame *f)
{
    if (f->vector < 32) {
        /* One line, so a test log shows the whole report even if it keeps only the last line. */
        printf("*** exception %lu (%s) error 0x%lx rip 0x%lx cs 0x%lx rflags 0x%lx rsp 0x%lx", f->vector,
               exception_names[f->vector], f->error_code, f->rip, f->cs, f->rflags, f->rsp);
        if (f->vector == 14)
            printf(" cr2 0x%lx", read_cr2());
        printf("\n");
        poweroff();
    }
    irq_handler_t handler = irq_handlers[f->vector];
    if (handler != NULL) {
        handler((unsigned)f->vector);
        return;
    }
    printf("*** unexpected interrupt vector %lu at rip 0x%lx\n", f->vector, f->rip);
    /* The spurious vector must not be acknowledged (SDM vol. 3 §12.9); anything else might be in
     * service at the LAPIC, and an EOI with nothing in service is harmless. */
    if (f->vector != LAPIC_SPURIOUS_VECTOR)
        lapic_eoi();
}
