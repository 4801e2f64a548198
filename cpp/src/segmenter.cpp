// The Segmenter: frames in, labels out, as the Python Segmenter does it (resize to the
// model's size, the labels back at each frame's size, batches up to the model's largest,
// a static-batch model padded with the last frame), over a Backend.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>

#include "internal.hpp"

namespace ssr_deploy {

using detail::Spec;

struct Segmenter::Impl {
    Spec spec;
    Options options;
    std::unique_ptr<Backend> backend;
    std::vector<std::string> notes;
    std::mutex lock;
    std::string name;
};

namespace {

void check_frame(const Frame& f, std::size_t index) {
    const std::string which = "frame " + std::to_string(index);
    if (f.data == nullptr)
        throw Error(which + " has no pixels (a null pointer); give uint8 BGR pixels");
    if (f.height <= 0 || f.width <= 0)
        throw Error(which + " is " + std::to_string(f.height) + "x" + std::to_string(f.width) +
                    "; a frame has at least one row and one column");
    if (f.stride < static_cast<std::ptrdiff_t>(f.width) * 3)
        throw Error(which + ": stride " + std::to_string(f.stride) + " is less than its " +
                    std::to_string(f.width) + " pixels x 3 bytes; give the bytes from one row "
                    "to the next (width * 3 for packed rows)");
}

}  // namespace

Segmenter::Segmenter(const std::string& xml_path, const Options& options)
    : impl_(std::make_unique<Impl>()) {
    Impl& m = *impl_;
    m.options = options;
    m.name = std::filesystem::path(xml_path).filename().string();
    if (options.threads < 0)
        throw Error("threads=" + std::to_string(options.threads) + ": give a whole number >= 1 "
                    "(0: OpenVINO's)");
    m.spec = detail::read_sidecar(xml_path);
    const detail::Cpu cpu = detail::this_cpu();
    if (m.spec.precision == "int8") {
        const std::string form = m.spec.int8_form.empty() ? "s8" : m.spec.int8_form;
        if (!m.spec.tuned_cpu_kind.empty() && m.spec.tuned_cpu_kind != cpu.kind)
            m.notes.push_back(m.name + ": int8 form " + form + " tuned on a " +
                              detail::kind_title(m.spec.tuned_cpu_kind) + " CPU, running on " +
                              detail::kind_title(cpu.kind));
        const std::string why = detail::known_wrong(form, cpu.kind);
        if (!why.empty())
            throw Error(m.name + " is int8 in the " + form + " form, known to run wrong on this "
                        "CPU (" + why + ", " + detail::kind_title(cpu.kind) + "): export it "
                        "again on this machine (ssr-deploy export openvino MODEL.onnx -o " +
                        m.name + " --precision int8), or re-verify it with the Python runtime");
    }
    const std::string precision =
        detail::choose_precision(m.spec, options.precision, cpu, m.name, m.notes);
    m.backend = detail::open_openvino(xml_path, m.spec, precision, options.threads);
}

Segmenter::~Segmenter() = default;
Segmenter::Segmenter(Segmenter&&) noexcept = default;
Segmenter& Segmenter::operator=(Segmenter&&) noexcept = default;

Labels Segmenter::operator()(const Frame& frame) { return predict_batch({frame})[0]; }

std::vector<Labels> Segmenter::predict_batch(const std::vector<Frame>& frames) {
    Impl& m = *impl_;
    for (std::size_t i = 0; i < frames.size(); ++i) check_frame(frames[i], i);
    const int h = m.spec.height, w = m.spec.width;
    const std::size_t image = static_cast<std::size_t>(h) * w * 3;
    const bool fixed = m.spec.input_shape[0] > 0;  // a static batch: padded to it
    const int step = fixed ? static_cast<int>(m.spec.input_shape[0]) : m.spec.batch_max;
    const bool i32 = m.spec.classes.size() > 256 || m.spec.output_dtype == "int32";
    std::vector<Labels> out;
    std::vector<std::uint8_t> batch;
    std::lock_guard<std::mutex> turn(m.lock);
    for (std::size_t start = 0; start < frames.size(); start += step) {
        const int count = static_cast<int>(std::min<std::size_t>(step, frames.size() - start));
        const int n = fixed ? step : count;
        batch.assign(image * n, 0);
        for (int k = 0; k < n; ++k) {
            const Frame& f = frames[start + std::min(k, count - 1)];  // padding: the last frame
            if ((f.height != h || f.width != w) && !m.options.resize)
                throw Error("frame " + std::to_string(start + k) + " is " +
                            std::to_string(f.height) + "x" + std::to_string(f.width) +
                            ", the model takes " + std::to_string(h) + "x" + std::to_string(w) +
                            ": resize it first, or load with resize on");
            detail::resize_linear(f.data, f.height, f.width, f.stride, batch.data() + image * k,
                                  h, w, 3);
            if (m.spec.input_color == "rgb")
                for (std::size_t p = image * k; p < image * (k + 1); p += 3)
                    std::swap(batch[p], batch[p + 2]);
        }
        const std::vector<std::int32_t> labels = m.backend->infer(batch.data(), n, h, w);
        for (int k = 0; k < count; ++k) {
            const Frame& f = frames[start + k];
            Labels l;
            l.height = f.height;
            l.width = f.width;
            const std::int32_t* at = labels.data() + static_cast<std::size_t>(k) * h * w;
            const std::size_t pixels = static_cast<std::size_t>(f.height) * f.width;
            if (i32) {
                l.type = Labels::Type::i32;
                l.i32.resize(pixels);
                detail::resize_nearest(at, h, w, l.i32.data(), f.height, f.width);
            } else {
                std::vector<std::uint8_t> narrow(at, at + static_cast<std::size_t>(h) * w);
                l.u8.resize(pixels);
                detail::resize_nearest(narrow.data(), h, w, l.u8.data(), f.height, f.width);
            }
            out.push_back(std::move(l));
        }
    }
    return out;
}

void Segmenter::colorize(const Labels& labels, std::uint8_t* out,
                         std::ptrdiff_t out_stride) const {
    const auto& palette = impl_->spec.palette;
    if (out == nullptr || out_stride < static_cast<std::ptrdiff_t>(labels.width) * 3)
        throw Error("colorize: give an output of height x width x 3 bytes, rows at least "
                    "width * 3 apart");
    for (int y = 0; y < labels.height; ++y)
        for (int x = 0; x < labels.width; ++x) {
            const int id = labels.at(y, x);
            std::uint8_t* px = out + y * out_stride + x * 3;
            if (id < 0 || id >= static_cast<int>(palette.size())) {
                px[0] = px[1] = px[2] = 0;  // past the palette: black, as Python
            } else {
                px[0] = palette[id][2];  // BGR from the sidecar's RGB
                px[1] = palette[id][1];
                px[2] = palette[id][0];
            }
        }
}

void Segmenter::overlay(const Frame& frame, const Labels& labels, std::uint8_t* out,
                        std::ptrdiff_t out_stride, float alpha) const {
    check_frame(frame, 0);
    if (!(alpha >= 0.f && alpha <= 1.f))
        throw Error("alpha=" + std::to_string(alpha) + ": the overlay's weight is between 0 and 1");
    if (labels.height != frame.height || labels.width != frame.width)
        throw Error("labels (" + std::to_string(labels.height) + ", " +
                    std::to_string(labels.width) + ") do not match the frame (" +
                    std::to_string(frame.height) + ", " + std::to_string(frame.width) + ")");
    colorize(labels, out, out_stride);
    for (int y = 0; y < frame.height; ++y)
        for (int x = 0; x < frame.width * 3; ++x) {
            std::uint8_t& o = out[y * out_stride + x];
            const float mixed = frame.data[y * frame.stride + x] * (1.f - alpha) + o * alpha;
            o = static_cast<std::uint8_t>(std::clamp(std::nearbyint(mixed), 0.f, 255.f));
        }
}

const std::vector<std::string>& Segmenter::classes() const { return impl_->spec.classes; }
const std::vector<std::array<std::uint8_t, 3>>& Segmenter::palette() const {
    return impl_->spec.palette;
}
int Segmenter::height() const { return impl_->spec.height; }
int Segmenter::width() const { return impl_->spec.width; }
int Segmenter::max_batch() const {
    return impl_->spec.input_shape[0] > 0 ? static_cast<int>(impl_->spec.input_shape[0])
                                          : impl_->spec.batch_max;
}
std::string Segmenter::precision() const { return impl_->backend->precision(); }
const std::vector<std::string>& Segmenter::notes() const { return impl_->notes; }

const char* version() { return SSR_DEPLOY_VERSION; }

}  // namespace ssr_deploy
