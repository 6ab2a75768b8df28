// metrics.jsonl, one JSON object a line with a "step". A run that starts at step 0 starts the file
// empty (a folder reused for a new run must not show the old run's curve before the new one); a run
// that resumes at step S keeps the lines up to S and drops those after it, which a run that went
// further before it was resumed from an earlier checkpoint left (they would otherwise appear twice).
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"

namespace shortcut {

class MetricsLog {
 public:
  static constexpr const char* kFile = "metrics.jsonl";

  // Opens dir/metrics.jsonl for a run that continues after step `from_step` (0: a new run).
  void open(const std::filesystem::path& dir, int64_t from_step) {
    namespace fs = std::filesystem;
    path_ = dir / kFile;
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::vector<std::string> keep;
    if (from_step > 0 && fs::exists(path_, ec)) keep = lines_up_to(path_, from_step);
    // rewritten through a temporary file: a crash here leaves the old log, not half of it
    const fs::path tmp = path_.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      for (auto& l : keep) out << l << '\n';
      if (!out) throw FileError("cannot write " + tmp.string());
    }
    fs::rename(tmp, path_, ec);
    if (ec) throw FileError("cannot replace " + path_.string() + ": " + ec.message());
    out_.open(path_, std::ios::app);
    if (!out_) throw FileError("cannot write " + path_.string());
  }
  bool is_open() const { return out_.is_open(); }
  void write(const nlohmann::json& j) {
    out_ << j.dump() << '\n';
    out_.flush();
  }
  const std::filesystem::path& path() const { return path_; }

  // The lines of a log whose "step" is at most `step`, and those without a numeric step (a user's
  // own notes); a line that does not parse (cut off by a crash) is dropped.
  static std::vector<std::string> lines_up_to(const std::filesystem::path& file, int64_t step) {
    std::ifstream in(file);
    std::vector<std::string> keep;
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded()) continue;
      if (j.is_object() && j.contains("step") && j["step"].is_number() && j["step"].get<double>() > double(step))
        continue;
      keep.push_back(line);
    }
    return keep;
  }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace shortcut
