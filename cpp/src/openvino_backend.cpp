// The OpenVINO backend: the IR compiled for the CPU at the precision named (never OpenVINO's
// silent bf16 default), read back and refused if OpenVINO chose another; one compiled model
// and infer request per input shape (static shapes), as the Python backend does.
#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <tuple>

#include <openvino/openvino.hpp>

#include "internal.hpp"

namespace ssr_deploy::detail {
namespace {

std::string first_line(const std::exception& e) {
    std::string all = e.what();
    std::string keep;
    std::size_t start = 0;
    while (start <= all.size()) {
        const std::size_t end = std::min(all.find('\n', start), all.size());
        std::string line = all.substr(start, end - start);
        line.erase(0, line.find_first_not_of(" \t"));
        if (!line.empty() && line.rfind("Exception from", 0) != 0 && line.rfind("Check '", 0) != 0)
            return line.substr(0, 200);
        if (!line.empty()) keep = line;
        start = end + 1;
    }
    return keep.substr(0, 200);
}

std::string dtype_name(const ov::element::Type& t) {
    if (t == ov::element::u8) return "uint8";
    if (t == ov::element::i32) return "int32";
    if (t == ov::element::i64) return "int64";
    if (t == ov::element::f32) return "float32";
    if (t == ov::element::f16) return "float16";
    return t.get_type_name();
}

class OpenVinoBackend final : public Backend {
public:
    OpenVinoBackend(const std::string& xml, const Spec& spec, std::string precision, int threads)
        : spec_(spec), precision_(std::move(precision)), threads_(threads),
          name_(std::filesystem::path(xml).filename().string()) {
        try {
            model_ = core().read_model(xml);
        } catch (const std::exception& e) {
            throw Error("OpenVINO cannot read " + name_ + ": " + first_line(e));
        }
        check_io("input", model_->inputs(), spec.input_name, "uint8", 4);
        const std::string out_dtype = spec.output_kind == "logits" ? "float32" : spec.output_dtype;
        check_io("output", model_->outputs(), spec.output_name, out_dtype,
                 spec.output_kind == "logits" ? 4 : 3);
    }

    std::vector<std::int32_t> infer(const std::uint8_t* batch, int n, int h, int w) override {
        std::lock_guard<std::mutex> turn(lock_);  // a request runs one inference at a time
        ov::InferRequest& request = request_for(n, h, w);
        ov::Tensor input(ov::element::u8, ov::Shape{static_cast<std::size_t>(n),
                                                    static_cast<std::size_t>(h),
                                                    static_cast<std::size_t>(w), 3},
                         const_cast<std::uint8_t*>(batch));
        request.set_input_tensor(input);
        try {
            request.infer();
        } catch (const std::exception& e) {
            throw Error("OpenVINO failed to run " + name_ + ": " + first_line(e));
        }
        const ov::Tensor out = request.get_output_tensor();
        const std::size_t pixels = static_cast<std::size_t>(n) * h * w;
        std::vector<std::int32_t> labels(pixels);
        if (spec_.output_kind == "logits") {  // (N, C, H, W) float: argmax over C
            const float* logits = out.data<const float>();
            const std::size_t classes = out.get_shape()[1], plane = static_cast<std::size_t>(h) * w;
            for (int b = 0; b < n; ++b)
                for (std::size_t p = 0; p < plane; ++p) {
                    const float* at = logits + b * classes * plane + p;
                    std::size_t best = 0;
                    for (std::size_t c = 1; c < classes; ++c)
                        if (at[c * plane] > at[best * plane]) best = c;
                    labels[b * plane + p] = static_cast<std::int32_t>(best);
                }
        } else if (out.get_element_type() == ov::element::u8) {
            std::copy_n(out.data<const std::uint8_t>(), pixels, labels.begin());
        } else if (out.get_element_type() == ov::element::i32) {
            std::copy_n(out.data<const std::int32_t>(), pixels, labels.begin());
        } else if (out.get_element_type() == ov::element::i64) {
            std::copy_n(out.data<const std::int64_t>(), pixels, labels.begin());
        } else {
            throw Error(name_ + " returned " + dtype_name(out.get_element_type()) +
                        " labels; export it again with `ssr-deploy export openvino`");
        }
        return labels;
    }

    std::string precision() const override {
        return spec_.precision == "int8" ? "int8 + " + precision_ : precision_;
    }

private:
    static ov::Core& core() {
        static ov::Core instance;
        return instance;
    }

    void check_io(const char* kind, const std::vector<ov::Output<ov::Node>>& ports,
                  const std::string& name, const std::string& dtype, std::int64_t rank) const {
        if (ports.size() != 1)
            throw Error(name_ + " has " + std::to_string(ports.size()) + " " + kind +
                        "s; its sidecar describes one: it belongs to another model, export again");
        const auto& port = ports[0];
        const std::string found = dtype_name(port.get_element_type());
        const auto names = port.get_names();
        const std::int64_t found_rank = port.get_partial_shape().rank().get_length();
        if (!names.count(name) || found != dtype || found_rank != rank) {
            const std::string shown = names.empty() ? "?" : *names.begin();
            throw Error(name_ + ": " + kind + " " + shown + " is " + found + " of rank " +
                        std::to_string(found_rank) + ", its sidecar says '" + name + "' " +
                        dtype + " of rank " + std::to_string(rank) +
                        ": it belongs to another model, export again");
        }
    }

    ov::InferRequest& request_for(int n, int h, int w) {
        const auto key = std::make_tuple(n, h, w);
        auto it = compiled_.find(key);
        if (it != compiled_.end()) return it->second.second;
        std::shared_ptr<ov::Model> model = model_->clone();
        model->reshape(ov::PartialShape{n, h, w, 3});
        const ov::element::Type hint = precision_ == "bf16" ? ov::element::bf16 : ov::element::f32;
        ov::AnyMap config{ov::hint::inference_precision(hint),
                          ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
        if (threads_ > 0) config.emplace(ov::inference_num_threads(threads_));
        ov::CompiledModel compiled;
        try {
            compiled = core().compile_model(model, "CPU", config);
        } catch (const std::exception& e) {
            throw Error("OpenVINO " + std::string(ov::get_openvino_version().buildNumber) +
                        " cannot compile the model for [" + std::to_string(n) + ", " +
                        std::to_string(h) + ", " + std::to_string(w) + ", 3] at " + precision_ +
                        ": " + first_line(e) + "; run it at fp32");
        }
        const ov::element::Type chosen = compiled.get_property(ov::hint::inference_precision);
        if (chosen != hint)
            throw Error("OpenVINO compiled the model in " + chosen.get_type_name() + ", not the " +
                        precision_ + " asked for; run it at fp32");
        if (compiled_.size() >= 8) compiled_.erase(compiled_.begin());
        auto& slot = compiled_[key];
        slot.first = compiled;
        slot.second = compiled.create_infer_request();
        return slot.second;
    }

    Spec spec_;
    std::string precision_;
    int threads_;
    std::string name_;
    std::shared_ptr<ov::Model> model_;
    std::map<std::tuple<int, int, int>, std::pair<ov::CompiledModel, ov::InferRequest>> compiled_;
    std::mutex lock_;
};

}  // namespace

std::string choose_precision(const Spec& spec, const std::string& asked, const Cpu& cpu,
                             const std::string& name, std::vector<std::string>& notes) {
    if (!asked.empty() && asked != "fp32" && asked != "bf16")
        throw Error("precision '" + asked + "': OpenVINO runs fp32 or bf16");
    const std::string verified = spec.ir_precision.empty() ? "fp32" : spec.ir_precision;
    std::string precision = asked.empty() ? verified : asked;
    if (precision == "bf16" && !cpu.bf16) {
        if (!asked.empty())
            throw Error("precision bf16: this CPU has no bf16 instructions (avx512_bf16 or "
                        "AMX); OpenVINO would emulate it, slower than fp32. Use fp32, or int8 "
                        "(its float parts then run in fp32)");
        notes.push_back(name + " was verified at bf16; this CPU has no bf16 instructions, so "
                        "it runs at fp32 (at least as exact, slower)");
        return "fp32";
    }
    if (precision != verified)
        notes.push_back("runs at " + precision + " as asked, not verified: " + name +
                        " was verified at " + verified + "; `ssr-deploy export openvino "
                        "--precision " + precision + "` measures its agreement with fp32");
    return precision;
}

std::unique_ptr<Backend> open_openvino(const std::string& xml_path, const Spec& spec,
                                       const std::string& precision, int threads) {
    return std::make_unique<OpenVinoBackend>(xml_path, spec, precision, threads);
}

}  // namespace ssr_deploy::detail
