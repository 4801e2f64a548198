// This CPU's kind, as ssr_deploy.cpu reads it (/proc/cpuinfo's flags, capped by
// ONEDNN_MAX_CPU_ISA as oneDNN caps its kernels), and the int8 forms each kind runs wrong
// (ssr_deploy.backends.openvino.forms.WRONG).
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "internal.hpp"

namespace ssr_deploy::detail {
namespace {

const std::vector<std::string> kKinds = {"other", "avx2", "avx512", "vnni", "amx"};

int rank_of(const std::string& kind) {
    return static_cast<int>(std::find(kKinds.begin(), kKinds.end(), kind) - kKinds.begin());
}

std::set<std::string> proc_flags() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("flags", 0) == 0) {
            std::istringstream words(line.substr(line.find(':') + 1));
            return {std::istream_iterator<std::string>(words), {}};
        }
    }
    return {};
}

}  // namespace

std::string kind_title(const std::string& kind) {
    static const std::map<std::string, std::string> titles = {
        {"amx", "AMX"}, {"vnni", "VNNI without AMX"}, {"avx512", "AVX-512 without VNNI"},
        {"avx2", "AVX2 without VNNI"}, {"other", "no AVX2"}};
    const auto it = titles.find(kind);
    return it == titles.end() ? kind : it->second;
}

Cpu this_cpu() {
    const std::set<std::string> flags = proc_flags();
    auto has = [&](const char* f) { return flags.count(f) > 0; };
    Cpu cpu;
    cpu.kind = has("amx_int8") ? "amx"
             : (has("avx512_vnni") || has("avx_vnni")) ? "vnni"
             : (has("avx512bw") || has("avx512f")) ? "avx512"
             : has("avx2") ? "avx2" : "other";
    cpu.bf16 = has("avx512_bf16") || has("amx_bf16") || has("avx_ne_convert");
    const char* cap = std::getenv("ONEDNN_MAX_CPU_ISA");
    if (!cap) cap = std::getenv("DNNL_MAX_CPU_ISA");
    if (cap && *cap) {
        static const std::map<std::string, std::pair<std::string, bool>> caps = {
            {"SSE41", {"other", false}}, {"AVX", {"other", false}}, {"AVX2", {"avx2", false}},
            {"AVX2_VNNI", {"vnni", false}}, {"AVX2_VNNI_2", {"vnni", true}},
            {"AVX512_CORE", {"avx512", false}}, {"AVX512_CORE_VNNI", {"vnni", false}},
            {"AVX512_CORE_BF16", {"vnni", true}}, {"AVX512_CORE_FP16", {"vnni", true}},
            {"AVX10_1_512", {"vnni", true}}, {"AVX512_CORE_AMX", {"amx", true}},
            {"AVX512_CORE_AMX_FP16", {"amx", true}}, {"AVX10_1_512_AMX", {"amx", true}},
            {"AVX10_1_512_AMX_FP16", {"amx", true}}, {"ALL", {"amx", true}},
            {"DEFAULT", {"amx", true}}};
        std::string upper(cap);
        std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
        const auto it = caps.find(upper);
        if (it != caps.end()) {
            if (rank_of(it->second.first) < rank_of(cpu.kind)) cpu.kind = it->second.first;
            cpu.bf16 = cpu.bf16 && it->second.second;
        }
    }
    return cpu;
}

std::string known_wrong(const std::string& form, const std::string& kind) {
    if (form == "s8" && kind != "amx")
        return "OpenVINO computes a signed int8 Concat feeding a convolution wrong without AMX";
    if (form == "u8" && kind != "amx" && kind != "vnni")
        return "8-bit weights overflow the 16-bit sums of int8 instructions without VNNI";
    return "";
}

}  // namespace ssr_deploy::detail
