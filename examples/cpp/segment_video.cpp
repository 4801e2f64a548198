// Segment a video file, an image folder or a camera with an OpenVINO IR exported by
// ssr-deploy; write the overlays (a video, or PNGs named as the images) and print FPS.
//   segment_video model.xml drive.mp4 drive_seg.mp4
//   segment_video model.xml frames/ overlays/
//   segment_video model.xml 0 cam.mp4          (camera 0; Ctrl-C to stop)
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/videoio.hpp>
#include <ssr_deploy/ssr_deploy.hpp>

namespace fs = std::filesystem;

namespace {

cv::Mat overlay(ssr_deploy::Segmenter& seg, const cv::Mat& image) {
    cv::Mat bgr = image.isContinuous() ? image : image.clone();
    const ssr_deploy::Frame frame{bgr.data, bgr.rows, bgr.cols, static_cast<std::ptrdiff_t>(bgr.step)};
    const ssr_deploy::Labels labels = seg(frame);
    cv::Mat out(bgr.rows, bgr.cols, CV_8UC3);
    seg.overlay(frame, labels, out.data, static_cast<std::ptrdiff_t>(out.step));
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 4) {
        std::cerr << "usage: segment_video model.xml SOURCE OUTPUT   (SOURCE: a video, a folder "
                     "of images or a camera index)\n";
        return 2;
    }
    try {
        ssr_deploy::Segmenter seg(argv[1]);
        for (const auto& note : seg.notes()) std::cerr << "note: " << note << "\n";
        const std::string source = argv[2], output = argv[3];
        int frames = 0;
        const auto start = std::chrono::steady_clock::now();
        if (fs::is_directory(source)) {
            fs::create_directories(output);
            std::vector<fs::path> images;
            for (const auto& entry : fs::directory_iterator(source))
                if (!cv::imread(entry.path().string(), cv::IMREAD_UNCHANGED).empty())
                    images.push_back(entry.path());
            std::sort(images.begin(), images.end());
            for (const auto& path : images) {
                cv::Mat image = cv::imread(path.string(), cv::IMREAD_COLOR);
                cv::imwrite((fs::path(output) / path.filename().replace_extension(".png")).string(),
                            overlay(seg, image));
                ++frames;
            }
        } else {
            const bool camera = !source.empty() &&
                                source.find_first_not_of("0123456789") == std::string::npos;
            cv::VideoCapture in = camera ? cv::VideoCapture(std::stoi(source))
                                         : cv::VideoCapture(source);
            if (!in.isOpened()) throw ssr_deploy::Error("cannot open " + source + " with OpenCV");
            const double fps = in.get(cv::CAP_PROP_FPS) > 0 ? in.get(cv::CAP_PROP_FPS) : 25.0;
            cv::VideoWriter out;
            cv::Mat image;
            while (in.read(image)) {
                cv::Mat blended = overlay(seg, image);
                if (!out.isOpened() &&
                    !out.open(output, cv::VideoWriter::fourcc('m', 'p', '4', 'v'), fps,
                              blended.size()))
                    throw ssr_deploy::Error("cannot write " + output + " with OpenCV");
                out.write(blended);
                ++frames;
            }
        }
        const double seconds = std::chrono::duration<double>(
            std::chrono::steady_clock::now() - start).count();
        std::cout << frames << " frames, " << (seconds > 0 ? frames / seconds : 0.0)
                  << " FPS end to end (" << seg.precision() << ")\n";
    } catch (const ssr_deploy::Error& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
