// HostPrefetch is header-only (include/HostPrefetch.h); SwiftPM wants one source file per C target.
#include "HostPrefetch.h"
