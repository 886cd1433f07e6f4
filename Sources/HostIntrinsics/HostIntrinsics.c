// The definitions behind include/HostIntrinsics.h; everything else there is static inline.
#include "HostIntrinsics.h"

_Thread_local long thpsim_thread_cpu_slot = 0;
