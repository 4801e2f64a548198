// ssr-deploy's C++ runtime: run a model exported by `ssr-deploy export openvino` (the .xml,
// its .bin and the .xml.json sidecar) on uint8 BGR frames and get label maps, with the same
// checks, pre- and post-processing and one-line errors as the Python Segmenter.
//
//   ssr_deploy::Segmenter seg("model.xml");
//   ssr_deploy::Labels labels = seg({pixels, height, width, stride});   // class ids
//   std::vector<std::uint8_t> out(height * width * 3);
//   seg.overlay({pixels, height, width, stride}, labels, out.data(), width * 3);
//
// Thread safety: a Segmenter may be called from several threads; calls take turns.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ssr_deploy {

//! Every refusal: one line naming the problem and the fix (Python's SsrDeployError's text).
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

//! A uint8 BGR image in memory: ``height`` rows of ``width`` pixels, 3 bytes each, rows
//! ``stride`` bytes apart (at least width * 3). The pixels are read, never kept.
struct Frame {
    const std::uint8_t* data = nullptr;
    int height = 0;
    int width = 0;
    std::ptrdiff_t stride = 0;
};

//! Class ids at the frame's size, in the type the sidecar says (uint8 up to 256 classes,
//! int32 beyond); ``at`` reads either.
struct Labels {
    enum class Type { u8, i32 };
    int height = 0;
    int width = 0;
    Type type = Type::u8;
    std::vector<std::uint8_t> u8;    // height * width, when type == u8
    std::vector<std::int32_t> i32;   // height * width, when type == i32
    int at(int y, int x) const {
        const std::size_t i = static_cast<std::size_t>(y) * width + x;
        return type == Type::u8 ? u8[i] : i32[i];
    }
};

struct Options {
    //! "fp32" or "bf16"; empty: the precision the IR was verified at (its sidecar), fp32 on
    //! a CPU without bf16 instructions (said in notes()).
    std::string precision;
    //! Inference threads; 0: OpenVINO's (the cores).
    int threads = 0;
    //! Resize frames of another size to the model's (bilinear, as the Python runtime and
    //! OpenCV do) and the labels back (nearest); false: such a frame is refused.
    bool resize = true;
};

//! What runs the model: an input batch (N, H, W, 3) uint8 in, the model's output out. The
//! OpenVINO backend is the one built here; another (TensorRT) implements the same two calls.
class Backend {
public:
    virtual ~Backend() = default;
    //! ``batch``: n frames of h x w x 3 bytes, contiguous. Returns n * h * w labels
    //! (already arg-maxed), as int32.
    virtual std::vector<std::int32_t> infer(const std::uint8_t* batch, int n, int h, int w) = 0;
    //! "fp32", "bf16", "int8 + bf16" ...
    virtual std::string precision() const = 0;
};

class Segmenter {
public:
    //! Load an IR and check it as Python does: the sidecar (its format, the .xml's and
    //! .bin's sha256, the I/O, classes, palette), the precision set explicitly.
    explicit Segmenter(const std::string& xml_path, const Options& options = {});
    ~Segmenter();
    Segmenter(Segmenter&&) noexcept;
    Segmenter& operator=(Segmenter&&) noexcept;
    Segmenter(const Segmenter&) = delete;
    Segmenter& operator=(const Segmenter&) = delete;

    //! One frame -> its labels at the frame's size.
    Labels operator()(const Frame& frame);
    //! Frames of any sizes -> one label map each, run in batches of the model's largest.
    std::vector<Labels> predict_batch(const std::vector<Frame>& frames);

    //! Labels in the model's palette as BGR pixels into ``out`` (rows ``out_stride`` apart).
    void colorize(const Labels& labels, std::uint8_t* out, std::ptrdiff_t out_stride) const;
    //! The frame blended with its coloured labels (alpha: the labels' weight, 0 to 1).
    void overlay(const Frame& frame, const Labels& labels, std::uint8_t* out,
                 std::ptrdiff_t out_stride, float alpha = 0.5f) const;

    const std::vector<std::string>& classes() const;
    //! RGB triples, one per class (as the sidecar holds them).
    const std::vector<std::array<std::uint8_t, 3>>& palette() const;
    int height() const;   // the model's input size
    int width() const;
    int max_batch() const;
    std::string precision() const;
    //! What the loader says about how the model runs here (e.g. bf16 IR on a CPU without).
    const std::vector<std::string>& notes() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

const char* version();

}  // namespace ssr_deploy
