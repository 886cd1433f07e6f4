// HostIntrinsics is header-only (include/HostIntrinsics.h); SwiftPM wants one source file per C target.
#include "HostIntrinsics.h"
