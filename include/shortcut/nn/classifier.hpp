// A small image classifier built from the library's own layers (Linear, GELU), used as the feature
// extractor of the sample-quality metric: Fréchet distance in its penultimate-layer feature space and
// the accuracy of class-conditional samples. Not Inception: see docs/images.md.
//   x [B, H*W*C] -> Linear(., h1) GELU -> Linear(h1, h2) GELU = features -> Linear(h2, classes) = logits
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"

namespace shortcut::nn {

struct ClassifierConfig {
  int image = 28, channels = 1, classes = 10, hidden1 = 512, hidden2 = 128;
  int inputs() const { return image * image * channels; }
  void validate() const {
    if (image <= 0 || channels <= 0 || classes <= 1 || hidden1 <= 0 || hidden2 <= 0)
      throw ConfigError(cat("classifier config: sizes must be positive and classes > 1 (image ", image, ", channels ",
                            channels, ", classes ", classes, ", hidden ", hidden1, "/", hidden2, ")"));
  }
  nlohmann::json to_json() const {
    return {{"model", "classifier"}, {"image", image}, {"channels", channels}, {"classes", classes},
            {"hidden1", hidden1}, {"hidden2", hidden2}};
  }
  static ClassifierConfig from_json(const nlohmann::json& j) {
    ClassifierConfig c;
    try {
      if (j.value("model", "") != "classifier") throw ConfigError("not a classifier config: " + j.dump());
      c.image = j.at("image"); c.channels = j.at("channels"); c.classes = j.at("classes");
      c.hidden1 = j.at("hidden1"); c.hidden2 = j.at("hidden2");
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(std::string("classifier config JSON: ") + e.what());
    }
    c.validate();
    return c;
  }
};

template <ComputeBackend Be>
class Classifier {
 public:
  using Backend = Be;
  using T = typename Be::Scalar;
  using Scalar = T;
  using Buf = typename Be::template Buffer<T>;
  using Config = ClassifierConfig;
  struct Context {
    int B = 0;
    Buf x, a1, g1, a2, g2, logits, d1, d2;
  };

  Classifier(Be& be, const ClassifierConfig& c) : be_(&be), c_(c) {
    c_.validate();
    l1_ = Linear(L_, "fc1", c.inputs(), c.hidden1);
    l2_ = Linear(L_, "fc2", c.hidden1, c.hidden2);
    l3_ = Linear(L_, "head", c.hidden2, c.classes);
  }
  const ParamLayout& layout() const { return L_; }
  const ClassifierConfig& config() const { return c_; }
  nlohmann::json config_json() const { return c_.to_json(); }
  int feature_dim() const { return c_.hidden2; }

  // x [B, inputs] (device) -> logits [B, classes] in the context; features [B, hidden2] too.
  const T* forward(Context& c, const T* P, const T* x, int B) const {
    const Be& be = *be_;
    c.B = B;
    ensure(c.x, size_t(B) * c_.inputs());
    ensure(c.a1, size_t(B) * c_.hidden1); ensure(c.g1, c.a1.size());
    ensure(c.a2, size_t(B) * c_.hidden2); ensure(c.g2, c.a2.size());
    ensure(c.logits, size_t(B) * c_.classes);
    be.copy(c.x.data(), x, c.x.size());
    l1_.forward(be, P, c.a1.data(), x, B);
    be.gelu_forward(c.g1.data(), c.a1.data(), c.a1.size());
    l2_.forward(be, P, c.a2.data(), c.g1.data(), B);
    be.gelu_forward(c.g2.data(), c.a2.data(), c.a2.size());
    l3_.forward(be, P, c.logits.data(), c.g2.data(), B);
    return c.logits.data();
  }
  const T* features(const Context& c) const { return c.g2.data(); }

  void backward(Context& c, const T* P, T* G, const T* dlogits) const {
    const Be& be = *be_;
    const int B = c.B;
    ensure(c.d2, c.a2.size());
    ensure(c.d1, c.a1.size());
    l3_.backward(be, P, G, c.d2.data(), dlogits, c.g2.data(), B);
    be.gelu_backward(c.d2.data(), c.d2.data(), c.a2.data(), c.a2.size());
    l2_.backward(be, P, G, c.d1.data(), c.d2.data(), c.g1.data(), B);
    be.gelu_backward(c.d1.data(), c.d1.data(), c.a1.data(), c.a1.size());
    l1_.backward(be, P, G, static_cast<T*>(nullptr), c.d1.data(), c.x.data(), B);
  }

 private:
  Be* be_;
  ClassifierConfig c_;
  ParamLayout L_;
  Linear l1_, l2_, l3_;
};

// Mean softmax cross-entropy of host logits [B, K] against labels; dlogits (optional) gets its
// gradient. Returns the loss; `correct` (optional) counts the argmax hits.
template <class T>
double softmax_cross_entropy(const T* logits, const int32_t* labels, int B, int K, T* dlogits = nullptr,
                             int* correct = nullptr) {
  double loss = 0;
  int hits = 0;
  for (int b = 0; b < B; ++b) {
    const T* z = logits + size_t(b) * K;
    if (labels[b] < 0 || labels[b] >= K) throw ConfigError(cat("label ", labels[b], " outside [0, ", K, ")"));
    int arg = 0;
    for (int k = 1; k < K; ++k) arg = z[k] > z[arg] ? k : arg;
    hits += arg == labels[b];
    double mx = z[arg], s = 0;
    for (int k = 0; k < K; ++k) s += std::exp(double(z[k]) - mx);
    loss += mx + std::log(s) - double(z[labels[b]]);
    if (dlogits)
      for (int k = 0; k < K; ++k)
        dlogits[size_t(b) * K + k] = T((std::exp(double(z[k]) - mx) / s - (k == labels[b])) / B);
  }
  if (correct) *correct = hits;
  return loss / B;
}

}  // namespace shortcut::nn
