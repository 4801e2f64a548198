// The sidecar and the files it vouches for, checked as ssr_deploy.spec.ModelSpec.load and
// the OpenVINO backend's _check_files check them, with the same one-line messages.
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "internal.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ssr_deploy::detail {
namespace {

std::string name_of(const std::string& path) { return fs::path(path).filename().string(); }

[[noreturn]] void fail(const std::string& text) { throw Error(text); }

[[noreturn]] void malformed(const std::string& source, const std::string& field) {
    fail(source + ": " + field + " is missing or malformed; export the model again");
}

const json& need(const json& object, const char* key, const std::string& source,
                 const std::string& where) {
    if (!object.is_object() || !object.contains(key)) malformed(source, where + "." + key);
    return object.at(key);
}

std::string text(const json& object, const char* key, const std::string& source,
                 const std::string& where) {
    const json& value = need(object, key, source, where);
    if (!value.is_string()) malformed(source, where + "." + key);
    return value.get<std::string>();
}

std::vector<std::int64_t> shape(const json& value, std::size_t rank, const std::string& source,
                                const std::string& where) {
    if (!value.is_array() || value.size() != rank) malformed(source, where);
    std::vector<std::int64_t> out;
    for (const json& d : value) {
        if (!d.is_number_integer() || (d.get<std::int64_t>() < 1 && d.get<std::int64_t>() != -1))
            malformed(source, where);
        out.push_back(d.get<std::int64_t>());
    }
    return out;
}

}  // namespace

std::string file_sha256(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("cannot read " + path);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                 EVP_MD_CTX_free);
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
        fail("OpenSSL could not start a sha256");
    std::vector<char> buffer(1 << 20);
    while (in) {
        in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        if (in.gcount() > 0 &&
            EVP_DigestUpdate(ctx.get(), buffer.data(), static_cast<std::size_t>(in.gcount())) != 1)
            fail("OpenSSL could not hash " + path);
    }
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx.get(), digest.data(), &length);
    std::ostringstream hex;
    for (unsigned int i = 0; i < length; ++i)
        hex << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(digest[i]);
    return hex.str();
}

Spec read_sidecar(const std::string& xml_path) {
    const fs::path model(xml_path);
    const fs::path path = fs::path(xml_path + ".json");
    const std::string sidecar = path.filename().string();
    if (!fs::is_regular_file(model))
        fail("model file " + xml_path + " does not exist; check the path");
    if (!fs::is_regular_file(path))
        fail(xml_path + " has no metadata sidecar " + sidecar + "; keep the .json that "
             "`ssr-deploy export` wrote next to it, or export again");
    json d;
    try {
        std::ifstream in(path);
        d = json::parse(in);
    } catch (const json::exception& e) {
        fail("sidecar " + sidecar + " is not valid JSON; export the model again");
    }
    const std::string source = "sidecar " + sidecar;
    if (!d.is_object()) fail(source + " is not a JSON object; export the model again");
    const json fmt = d.value("metadata_format", json());
    if (!(fmt.is_number_integer() && fmt.get<int>() == kSidecarFormat))
        fail(source + " is metadata format " + (fmt.is_null() ? "None" : fmt.dump()) +
             ", this ssr-deploy reads " + std::to_string(kSidecarFormat) +
             "; export again with this ssr-deploy");

    Spec s;
    s.file = d.value("file", "");
    s.sha256 = d.value("sha256", "");
    if (!s.file.empty() && s.file != model.filename().string() && s.sha256.empty())
        fail(source + " describes '" + s.file + "', not " + model.filename().string() +
             ": it belongs to another file; keep each model with its own sidecar (rename both "
             "together and edit \"file\"), or export again");
    if (!s.sha256.empty() && s.sha256 != file_sha256(xml_path))
        fail(source + " does not describe " + model.filename().string() + ": the model file "
             "changed after export (sha256 differs); export again");

    const json& in = need(d, "input", source, "input");
    s.input_name = text(in, "name", source, "input");
    if (text(in, "dtype", source, "input") != "uint8" || text(in, "layout", source, "input") != "NHWC")
        fail(name_of(xml_path) + " takes " + in.value("dtype", "?") + " " +
             in.value("layout", "?") + " input; the C++ runtime runs models exported with "
             "--input uint8-nhwc-bgr (or -rgb): export it so");
    s.input_color = text(in, "color", source, "input");
    s.input_shape = shape(need(in, "shape", source, "input"), 4, source, "input.shape");
    const auto size = shape(need(in, "size", source, "input"), 2, source, "input.size");
    s.height = static_cast<int>(size[0]);
    s.width = static_cast<int>(size[1]);
    const json& out = need(d, "output", source, "output");
    s.output_name = text(out, "name", source, "output");
    s.output_kind = text(out, "kind", source, "output");
    s.output_dtype = text(out, "dtype", source, "output");
    if (s.output_kind != "labels" && s.output_kind != "logits") malformed(source, "output.kind");

    const json& classes = need(d, "classes", source, "classes");
    if (!classes.is_array() || classes.empty())
        fail("classes must be a non-empty list of names; export the model again");
    for (const json& c : classes) {
        if (!c.is_string()) fail("classes must be a non-empty list of names; export the model again");
        s.classes.push_back(c.get<std::string>());
    }
    const json& palette = need(d, "palette", source, "palette");
    if (!palette.is_array() || palette.size() < s.classes.size())
        fail("palette must hold an RGB triple of 0-255 for every class; export the model again");
    for (const json& rgb : palette) {
        if (!rgb.is_array() || rgb.size() != 3)
            fail("palette must hold an RGB triple of 0-255 for every class; export the model again");
        std::array<std::uint8_t, 3> c{};
        for (int k = 0; k < 3; ++k) {
            if (!rgb[k].is_number_integer() || rgb[k].get<int>() < 0 || rgb[k].get<int>() > 255)
                fail("palette must hold an RGB triple of 0-255 for every class; export the model again");
            c[k] = static_cast<std::uint8_t>(rgb[k].get<int>());
        }
        s.palette.push_back(c);
    }
    s.batch_min = s.batch_max = static_cast<int>(s.input_shape[0]);
    const json dynamic = d.value("dynamic", json());
    if (dynamic.is_object() && dynamic.value("batch", json()).is_object()) {
        s.batch_min = dynamic["batch"].value("min", 1);
        s.batch_max = dynamic["batch"].value("max", 1);
    }
    if (s.batch_max < 1 || s.batch_min < 1 || s.batch_min > s.batch_max)
        malformed(source, "dynamic.batch");
    s.precision = d.value("precision", "fp32");

    const json ov = d.value("openvino", json());
    if (!ov.is_object())
        fail(model.filename().string() + "'s sidecar is not an OpenVINO IR's: export the IR "
             "with `ssr-deploy export openvino`");
    s.ir_precision = ov.value("inference_precision", "fp32");
    s.bin_sha256 = ov.value("bin_sha256", "");
    const json q = d.value("quantization", json());
    if (q.is_object()) {
        s.int8_form = q.value("form", json()).is_string() ? q["form"].get<std::string>() : "";
        const json cpu = q.value("cpu", json());
        if (cpu.is_object() && cpu.value("kind", json()).is_string())
            s.tuned_cpu_kind = cpu["kind"].get<std::string>();
    }

    // the files beside it: an IR this OpenVINO reads, its own .bin
    {
        std::ifstream head_in(xml_path, std::ios::binary);
        std::string head(4096, '\0');
        head_in.read(head.data(), static_cast<std::streamsize>(head.size()));
        head.resize(static_cast<std::size_t>(head_in.gcount()));
        std::smatch found;
        const std::regex net(R"(<net\b[^>]*\bversion="([^"]*)\")");
        const std::string said = std::regex_search(head, found, net) ? found[1].str() : "none";
        if (said != "10" && said != "11")
            fail(model.filename().string() + " is not an OpenVINO IR this OpenVINO reads (IR "
                 "version " + said.substr(0, 12) + "; it reads 10, 11): export it again with "
                 "`ssr-deploy export openvino`");
    }
    const fs::path weights = fs::path(model).replace_extension(".bin");
    if (!fs::is_regular_file(weights))
        fail(model.filename().string() + " has no " + weights.filename().string() +
             " beside it: keep the .bin that `ssr-deploy export openvino` wrote next to it, or "
             "export again");
    if (file_sha256(weights.string()) != s.bin_sha256)
        fail(weights.filename().string() + " does not belong to " + model.filename().string() +
             " (sha256 differs from its sidecar's): it is another network's or another "
             "export's weights; keep each IR's .xml, .bin and .json together, or export again");
    return s;
}

}  // namespace ssr_deploy::detail
