// Resizes as OpenCV computes them (and ssr_deploy.imaging's numpy path, which matches it):
// INTER_LINEAR with 11-bit fixed-point weights (2x2 block averages for an exact halving),
// INTER_NEAREST with floor(i * scale).
#include <algorithm>
#include <cmath>
#include <vector>

#include "internal.hpp"

namespace ssr_deploy::detail {
namespace {

constexpr int kCoefBits = 11;
constexpr int kOne = 1 << kCoefBits;

struct Taps {
    std::vector<int> i0, i1, w0, w1;
};

Taps taps(int src, int dst) {
    Taps t;
    const double scale = static_cast<double>(src) / dst;
    for (int k = 0; k < dst; ++k) {
        float f = static_cast<float>((k + 0.5) * scale - 0.5);
        auto i = static_cast<long>(std::floor(f));
        f -= static_cast<float>(i);
        if (i < 0) {
            f = 0.f;
            i = 0;
        }
        if (i >= src - 1) {
            f = 0.f;
            i = src - 1;
        }
        t.i0.push_back(static_cast<int>(i));
        t.i1.push_back(static_cast<int>(std::min<long>(i + 1, src - 1)));
        t.w1.push_back(static_cast<int>(std::nearbyint(f * static_cast<float>(kOne))));
        t.w0.push_back(static_cast<int>(std::nearbyint((1.f - f) * static_cast<float>(kOne))));
    }
    return t;
}

}  // namespace

void resize_linear(const std::uint8_t* src, int sh, int sw, std::ptrdiff_t sstride,
                   std::uint8_t* dst, int h, int w, int channels) {
    const std::ptrdiff_t dstride = static_cast<std::ptrdiff_t>(w) * channels;
    if (sh == h && sw == w) {
        for (int y = 0; y < h; ++y) std::copy_n(src + y * sstride, dstride, dst + y * dstride);
        return;
    }
    if (sh == 2 * h && sw == 2 * w) {  // OpenCV averages 2x2 blocks here
        for (int y = 0; y < h; ++y) {
            const std::uint8_t* r0 = src + (2 * y) * sstride;
            const std::uint8_t* r1 = r0 + sstride;
            for (int x = 0; x < w; ++x)
                for (int c = 0; c < channels; ++c) {
                    const int a = r0[(2 * x) * channels + c] + r0[(2 * x + 1) * channels + c] +
                                  r1[(2 * x) * channels + c] + r1[(2 * x + 1) * channels + c];
                    dst[y * dstride + x * channels + c] = static_cast<std::uint8_t>((a + 2) >> 2);
                }
        }
        return;
    }
    const Taps tx = taps(sw, w), ty = taps(sh, h);
    // each source row resampled along x once, then rows mixed along y (x 2^11 each)
    std::vector<int> rows(static_cast<std::size_t>(sh) * w * channels, 0);
    std::vector<char> needed(sh, 0);
    for (int y = 0; y < h; ++y) needed[ty.i0[y]] = needed[ty.i1[y]] = 1;
    for (int sy = 0; sy < sh; ++sy) {
        if (!needed[sy]) continue;
        const std::uint8_t* row = src + sy * sstride;
        int* out = rows.data() + static_cast<std::size_t>(sy) * w * channels;
        for (int x = 0; x < w; ++x)
            for (int c = 0; c < channels; ++c)
                out[x * channels + c] = row[tx.i0[x] * channels + c] * tx.w0[x] +
                                        row[tx.i1[x] * channels + c] * tx.w1[x];
    }
    for (int y = 0; y < h; ++y) {
        const int* top = rows.data() + static_cast<std::size_t>(ty.i0[y]) * w * channels;
        const int* bottom = rows.data() + static_cast<std::size_t>(ty.i1[y]) * w * channels;
        for (int k = 0; k < w * channels; ++k) {  // OpenCV's vector path's rounding
            const int v = (((top[k] >> 4) * ty.w0[y]) >> 16) +
                          (((bottom[k] >> 4) * ty.w1[y]) >> 16);
            dst[y * dstride + k] = static_cast<std::uint8_t>(std::clamp((v + 2) >> 2, 0, 255));
        }
    }
}

template <typename T>
void resize_nearest(const T* src, int sh, int sw, T* dst, int h, int w) {
    std::vector<int> cols(w);
    for (int x = 0; x < w; ++x)
        cols[x] = std::min(static_cast<int>(std::floor(x * (static_cast<double>(sw) / w))), sw - 1);
    for (int y = 0; y < h; ++y) {
        const int sy = std::min(static_cast<int>(std::floor(y * (static_cast<double>(sh) / h))),
                                sh - 1);
        const T* row = src + static_cast<std::ptrdiff_t>(sy) * sw;
        for (int x = 0; x < w; ++x) dst[static_cast<std::ptrdiff_t>(y) * w + x] = row[cols[x]];
    }
}

template void resize_nearest<std::uint8_t>(const std::uint8_t*, int, int, std::uint8_t*, int, int);
template void resize_nearest<std::int32_t>(const std::int32_t*, int, int, std::int32_t*, int, int);

}  // namespace ssr_deploy::detail
