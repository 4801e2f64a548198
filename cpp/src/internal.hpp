// What the library's parts share; not installed.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ssr_deploy/ssr_deploy.hpp"

namespace ssr_deploy::detail {

//! The sidecar format this library reads (ssr_deploy.spec.SPEC_FORMAT).
constexpr int kSidecarFormat = 1;

//! What the runtime reads of a model's sidecar (``<model>.json``), checked.
struct Spec {
    std::string file;             // the model file the sidecar describes
    std::string sha256;           // of that file
    std::string input_name, input_color;  // color: "bgr" or "rgb"
    std::vector<std::int64_t> input_shape;  // NHWC, -1 dynamic
    int height = 0, width = 0;    // input.size
    std::string output_name, output_kind, output_dtype;  // kind: labels | logits
    std::vector<std::string> classes;
    std::vector<std::array<std::uint8_t, 3>> palette;  // RGB
    int batch_min = 1, batch_max = 1;
    std::string precision;        // fp32 | fp16 | int8 ...
    std::string ir_precision;     // openvino.inference_precision: fp32 | bf16
    std::string bin_sha256;       // openvino.bin_sha256
    std::string int8_form;        // quantization.form ("" for IRs from before forms: s8)
    std::string tuned_cpu_kind;   // quantization.cpu.kind
};

//! ``<xml>.json`` read and checked against the .xml and .bin (Python's ModelSpec.load and
//! the OpenVINO backend's file checks, with their messages).
Spec read_sidecar(const std::string& xml_path);

//! sha256 of a file, lowercase hex (OpenSSL).
std::string file_sha256(const std::string& path);

//! This CPU: "amx", "vnni", "avx512", "avx2" or "other" (ssr_deploy.cpu), and whether it
//! computes bf16 natively (avx512_bf16 or AMX).
struct Cpu {
    std::string kind;
    bool bf16 = false;
};
Cpu this_cpu();
//! Why an int8 form runs wrong on this kind of CPU, or "" (ssr_deploy.backends.openvino.forms).
std::string known_wrong(const std::string& form, const std::string& kind);
std::string kind_title(const std::string& kind);

//! Bilinear resize of interleaved uint8 pixels, as OpenCV's INTER_LINEAR (and the Python
//! runtime's numpy path) computes it.
void resize_linear(const std::uint8_t* src, int sh, int sw, std::ptrdiff_t sstride,
                   std::uint8_t* dst, int h, int w, int channels);
//! Nearest resize of labels, as OpenCV's INTER_NEAREST.
template <typename T>
void resize_nearest(const T* src, int sh, int sw, T* dst, int h, int w);

//! The OpenVINO backend: the IR compiled for this CPU at ``precision`` once per input shape.
std::unique_ptr<Backend> open_openvino(const std::string& xml_path, const Spec& spec,
                                       const std::string& precision, int threads);
//! The precision to compile a model of ``spec`` at here (Options.precision or the
//! sidecar's), and a note when it differs from what was verified.
std::string choose_precision(const Spec& spec, const std::string& asked, const Cpu& cpu,
                             const std::string& name, std::vector<std::string>& notes);

}  // namespace ssr_deploy::detail
