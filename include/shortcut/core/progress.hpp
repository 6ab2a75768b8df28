// A progress bar for long loops: step/total, named values (loss, ...), rate and ETA on one line,
// redrawn in place on a terminal; on a pipe or a CI log, one line every ~10% instead.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace shortcut {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, int64_t start = 0, bool enabled = true, std::FILE* out = stderr)
      : label_(std::move(label)), total_(total), start_(start), enabled_(enabled), out_(out),
        tty_(isatty(fileno(out))), t0_(clock::now()) {}
  ~ProgressBar() { finish(); }

  double elapsed() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }
  double rate(int64_t done) const {
    double e = elapsed();
    return e > 0 ? double(done - start_) / e : 0.0;
  }

  // done: items completed so far (absolute); values: (name, value) pairs shown after the bar.
  void update(int64_t done, const std::vector<std::pair<std::string, double>>& values = {}) {
    if (!enabled_) return;
    double now = elapsed();
    bool last = done >= total_;
    if (tty_) {
      if (!last && now - last_draw_ < 0.1) return;
    } else {
      int64_t decile = total_ > 0 ? done * 10 / total_ : 0;
      if (!last && decile == last_decile_) return;
      last_decile_ = decile;
    }
    last_draw_ = now;
    const int width = 24;
    double frac = total_ > 0 ? double(done) / double(total_) : 1.0;
    int fill = int(frac * width);
    std::string bar(size_t(fill), '#');
    bar += std::string(size_t(width - fill), '.');
    double r = rate(done);
    double eta = r > 0 ? double(total_ - done) / r : 0.0;
    std::string vals;
    char buf[96];
    for (auto& [k, v] : values) {
      std::snprintf(buf, sizeof buf, " %s %.4g", k.c_str(), v);
      vals += buf;
    }
    std::fprintf(out_, "%s%s [%s] %lld/%lld%s | %.2f it/s | %s elapsed, ETA %s%s", tty_ ? "\r" : "", label_.c_str(),
                 bar.c_str(), (long long)done, (long long)total_, vals.c_str(), r, hms(now).c_str(), hms(eta).c_str(),
                 tty_ ? "\x1b[K" : "\n");
    std::fflush(out_);
    drawn_ = true;
  }
  void finish() {
    if (enabled_ && tty_ && drawn_) std::fputc('\n', out_);
    drawn_ = false;
  }

 private:
  using clock = std::chrono::steady_clock;
  static std::string hms(double s) {
    long t = long(s + 0.5);
    char b[32];
    if (t >= 3600) std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
    return b;
  }
  std::string label_;
  int64_t total_, start_;
  bool enabled_, tty_;
  std::FILE* out_;
  clock::time_point t0_;
  double last_draw_ = -1;
  int64_t last_decile_ = -1;
  bool drawn_ = false;
};

}  // namespace shortcut
