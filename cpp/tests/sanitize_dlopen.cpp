// Linked into the sanitized builds' programs only (SSR_DEPLOY_SANITIZE). OpenVINO's TBB
// dlopens libtbbbind with RTLD_DEEPBIND, which AddressSanitizer refuses
// (google/sanitizers#611); this dlopen, found before the sanitizer's in symbol lookup, drops
// that flag and calls the next one. Nothing of ours depends on deep binding.
#include <dlfcn.h>

extern "C" void* dlopen(const char* file, int mode) {
    using Dlopen = void* (*)(const char*, int);
    static Dlopen next = reinterpret_cast<Dlopen>(dlsym(RTLD_NEXT, "dlopen"));
    return next(file, mode & ~RTLD_DEEPBIND);
}
