// Segment one binary PPM (P6) frame with an OpenVINO IR exported by ssr-deploy; write its
// labels as a PGM (P5: class ids as gray levels; 16-bit past 255 classes) and, if asked, the
// overlay as a PPM. No dependency beyond ssr_deploy.
//   segment_ppm model.xml frame.ppm labels.pgm [overlay.ppm]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ssr_deploy/ssr_deploy.hpp>

namespace {

std::vector<std::uint8_t> read_ppm(const std::string& path, int& height, int& width) {
    std::ifstream in(path, std::ios::binary);
    std::string magic;
    int maxval = 0;
    if (!(in >> magic >> width >> height >> maxval) || magic != "P6" || maxval != 255 ||
        width <= 0 || height <= 0)
        throw ssr_deploy::Error(path + " is not a binary 8-bit PPM (P6); convert it first, e.g. "
                                "with ImageMagick: convert frame.png frame.ppm");
    in.get();  // the one whitespace after the header
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(width) * height * 3);
    if (!in.read(reinterpret_cast<char*>(rgb.data()), static_cast<std::streamsize>(rgb.size())))
        throw ssr_deploy::Error(path + " is cut short: its pixels end before " +
                                std::to_string(width) + "x" + std::to_string(height));
    for (std::size_t i = 0; i < rgb.size(); i += 3) std::swap(rgb[i], rgb[i + 2]);  // -> BGR
    return rgb;
}

void write_file(const std::string& path, const std::string& header, const char* data,
                std::size_t size) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary);
        out << header;
        out.write(data, static_cast<std::streamsize>(size));
        if (!out) throw ssr_deploy::Error("cannot write " + path);
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) throw ssr_deploy::Error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4 || argc > 5) {
        std::cerr << "usage: segment_ppm model.xml frame.ppm labels.pgm [overlay.ppm]\n";
        return 2;
    }
    try {
        ssr_deploy::Segmenter seg(argv[1]);
        for (const auto& note : seg.notes()) std::cerr << "note: " << note << "\n";
        int h = 0, w = 0;
        const std::vector<std::uint8_t> bgr = read_ppm(argv[2], h, w);
        const ssr_deploy::Frame frame{bgr.data(), h, w, static_cast<std::ptrdiff_t>(w) * 3};
        const auto start = std::chrono::steady_clock::now();
        const ssr_deploy::Labels labels = seg(frame);
        const double ms = std::chrono::duration<double, std::milli>(
            std::chrono::steady_clock::now() - start).count();
        const std::string header = "P5\n" + std::to_string(w) + " " + std::to_string(h) + "\n";
        if (labels.type == ssr_deploy::Labels::Type::u8) {
            write_file(argv[3], header + "255\n", reinterpret_cast<const char*>(labels.u8.data()),
                       labels.u8.size());
        } else {  // 16-bit big-endian gray levels
            std::vector<std::uint8_t> wide;
            for (std::int32_t id : labels.i32) {
                wide.push_back(static_cast<std::uint8_t>(id >> 8));
                wide.push_back(static_cast<std::uint8_t>(id & 0xff));
            }
            write_file(argv[3], header + "65535\n", reinterpret_cast<const char*>(wide.data()),
                       wide.size());
        }
        if (argc == 5) {
            std::vector<std::uint8_t> out(bgr.size());
            seg.overlay(frame, labels, out.data(), static_cast<std::ptrdiff_t>(w) * 3);
            for (std::size_t i = 0; i < out.size(); i += 3) std::swap(out[i], out[i + 2]);
            write_file(argv[4], "P6\n" + std::to_string(w) + " " + std::to_string(h) + "\n255\n",
                       reinterpret_cast<const char*>(out.data()), out.size());
        }
        std::cout << argv[2] << ": " << w << "x" << h << ", " << seg.classes().size()
                  << " classes, " << seg.precision() << ", " << ms << " ms\n";
    } catch (const ssr_deploy::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
