// The C++ runtime as tests/cpp/test_cpp.py and benchmarks/cpp_runtime.py drive it.
//   api_test labels MODEL.xml FRAMES.raw N H W OUT.raw   N frames (uint8 BGR) -> int32 labels
//   api_test bad MODEL.xml                               each bad call's one-line error
//   api_test time MODEL.xml FRAMES.raw H W ITERS         per-iteration ms: the Segmenter, then
//                                                        OpenVINO's own infer on the same IR
//   api_test load MODEL.xml                              load only (a bad model's error)
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>
#include <ssr_deploy/ssr_deploy.hpp>

namespace {

std::vector<std::uint8_t> read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

void expect_error(const char* what, const std::function<void()>& call) {
    try {
        call();
        std::cout << what << ": no error\n";
    } catch (const ssr_deploy::Error& e) {
        std::cout << what << ": " << e.what() << "\n";
    }
}

double ms_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
        .count();
}

int load(const std::string& model) {
    ssr_deploy::Segmenter seg(model);
    std::cout << "loaded " << seg.height() << "x" << seg.width() << " " << seg.precision() << "\n";
    for (const auto& note : seg.notes()) std::cout << "note: " << note << "\n";
    return 0;
}

int labels(const std::string& model, const std::string& frames_file, int n, int h, int w,
           const std::string& out_file) {
    const std::vector<std::uint8_t> pixels = read_all(frames_file);
    if (pixels.size() != static_cast<std::size_t>(n) * h * w * 3) {
        std::cerr << "the frames file holds " << pixels.size() << " bytes\n";
        return 2;
    }
    ssr_deploy::Segmenter seg(model);
    std::vector<ssr_deploy::Frame> frames;
    for (int k = 0; k < n; ++k)
        frames.push_back({pixels.data() + static_cast<std::size_t>(k) * h * w * 3, h, w,
                          static_cast<std::ptrdiff_t>(w) * 3});
    const auto all = seg.predict_batch(frames);
    std::ofstream out(out_file, std::ios::binary);
    for (const auto& l : all)
        for (int y = 0; y < l.height; ++y)
            for (int x = 0; x < l.width; ++x) {
                const std::int32_t id = l.at(y, x);
                out.write(reinterpret_cast<const char*>(&id), sizeof id);
            }
    std::cout << seg.precision() << "\n";
    return out ? 0 : 1;
}

int bad(const std::string& model) {
    ssr_deploy::Options off;
    off.resize = false;
    ssr_deploy::Segmenter seg(model, off);
    const int h = seg.height(), w = seg.width();
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(h) * w * 3, 7);
    const ssr_deploy::Frame good{pixels.data(), h, w, static_cast<std::ptrdiff_t>(w) * 3};
    expect_error("null", [&] { seg({nullptr, h, w, w * 3}); });
    expect_error("zero stride", [&] { seg({pixels.data(), h, w, 0}); });
    expect_error("zero size", [&] { seg({pixels.data(), 0, w, w * 3}); });
    expect_error("wrong size", [&] { seg({pixels.data(), h / 2, w / 2, w * 3}); });
    expect_error("alpha", [&] {
        std::vector<std::uint8_t> out(pixels.size());
        seg.overlay(good, seg(good), out.data(), w * 3, 1.5f);
    });
    expect_error("threads", [&] {
        ssr_deploy::Options o;
        o.threads = -1;
        ssr_deploy::Segmenter(model, o);
    });
    expect_error("precision", [&] {
        ssr_deploy::Options o;
        o.precision = "fp8";
        ssr_deploy::Segmenter(model, o);
    });
    const auto l = seg(good);
    std::cout << "good: " << l.height << "x" << l.width << "\n";
    return 0;
}

int time_it(const std::string& model, const std::string& frames_file, int h, int w, int iters) {
    std::vector<std::uint8_t> pixels = read_all(frames_file);
    ssr_deploy::Segmenter seg(model);
    const ssr_deploy::Frame frame{pixels.data(), h, w, static_cast<std::ptrdiff_t>(w) * 3};
    // the same IR compiled by OpenVINO alone at the same precision: the floor
    const std::string precision = seg.precision();
    const bool bf16 = precision.size() >= 4 && precision.substr(precision.size() - 4) == "bf16";
    ov::Core core;
    auto raw = core.read_model(model);
    raw->reshape(ov::PartialShape{1, h, w, 3});
    ov::CompiledModel compiled = core.compile_model(
        raw, "CPU", ov::hint::inference_precision(bf16 ? ov::element::bf16 : ov::element::f32),
        ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY));
    ov::InferRequest request = compiled.create_infer_request();
    request.set_input_tensor(ov::Tensor(
        ov::element::u8,
        ov::Shape{1, static_cast<std::size_t>(h), static_cast<std::size_t>(w), 3}, pixels.data()));
    for (int k = 0; k < 3; ++k) {  // compiled, warm
        seg(frame);
        request.infer();
    }
    for (int k = 0; k < iters; ++k) {
        auto start = std::chrono::steady_clock::now();
        const auto l = seg(frame);
        const double segmenter = ms_since(start);
        start = std::chrono::steady_clock::now();
        request.infer();
        std::cout << "segmenter " << segmenter << " openvino " << ms_since(start) << "\n";
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    try {
        if (mode == "load" && argc == 3) return load(argv[2]);
        if (mode == "labels" && argc == 8)
            return labels(argv[2], argv[3], std::stoi(argv[4]), std::stoi(argv[5]),
                          std::stoi(argv[6]), argv[7]);
        if (mode == "bad" && argc == 3) return bad(argv[2]);
        if (mode == "time" && argc == 7)
            return time_it(argv[2], argv[3], std::stoi(argv[4]), std::stoi(argv[5]),
                           std::stoi(argv[6]));
    } catch (const ssr_deploy::Error& e) {
        std::cout << "error: " << e.what() << "\n";
        return 1;
    }
    std::cerr << "usage: api_test labels|bad|time|load MODEL.xml ...\n";
    return 2;
}
