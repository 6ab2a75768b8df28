// docs/training.md: a stateful data source, parameter groups, hooks and a resume. Run by CTest in its
// own folder (it writes run/ there and resumes from run/checkpoints/last); exit 0 when the resumed
// table walk ended where 200 straight steps would.
// [snippet begin]
#include <shortcut/shortcut.hpp>
using Be = shortcut::cpu::Backend<float>;
using Model = shortcut::ShortcutModel<shortcut::nn::MlpNet<Be>>;

// Walks a fixed table in order: its position is state that the RNG position alone does not give back.
struct TableRows {
  std::vector<float> table;  // [N, 2]
  int64_t position = 0;      // global rows served so far

  void fill(shortcut::Rng&, const shortcut::BatchSlice& s, std::vector<float>& x, std::vector<int32_t>& y) {
    const size_t n = table.size() / 2;
    x.resize(size_t(s.rows()) * 2);
    for (int i = 0; i < s.rows(); ++i) {  // this rank's rows: local row i is global row s.global_row(i)
      const size_t r = size_t(position + s.global_row(i)) % n;
      x[2 * size_t(i)] = table[2 * r];
      x[2 * size_t(i) + 1] = table[2 * r + 1];
      y[size_t(i)] = 0;  // y arrives sized s.rows()
    }
    position += s.batch;  // the whole batch on every rank: the same state everywhere
  }
  nlohmann::json state() const { return {{"position", position}}; }
  void restore(const nlohmann::json& j) { position = j.at("position").get<int64_t>(); }
};

int main() {
  Be be;
  shortcut::Rng draw(1);
  TableRows data{shortcut::data::sample_toy2d("checkerboard", 1000, draw)};
  shortcut::AdamWConfig oc{.lr = 1e-3};
  oc.groups = {{.pattern = "*.bias", .decay = false},           // no weight decay on biases
               {.pattern = "y_embedder.*", .lr_scale = 0.1}};  // the label table learns slower
  shortcut::TrainerConfig tc{.steps = 100, .batch = 64, .checkpoint_every = 50, .out_dir = "run", .progress = false};

  Model model(be, shortcut::nn::MlpNetConfig{.hidden = 64}, /*seed=*/0);
  shortcut::Trainer<Model> trainer(model, shortcut::ShortcutConfig{}, oc, tc);
  trainer.hooks().on_step = [](const shortcut::StepInfo& s) {  // every rank, every step
    if (s.step % 50 == 0) std::printf("step %lld: loss %.4f, lr %.2g\n", (long long)s.step, s.loss, s.lr);
  };
  trainer.hooks().on_checkpoint = [](int64_t step, const std::string& dir) {  // rank 0, once the folder is complete
    std::printf("step %lld saved in %s\n", (long long)step, dir.c_str());
  };
  trainer.run(data);  // a fresh run/metrics.jsonl, run/checkpoints/step_50 and run/checkpoints/last

  // Later, perhaps in another process: 100 steps more, from where the table walk stopped.
  tc.steps = 200;  // training longer is allowed; another lr, batch or group would be refused
  Model again(be, shortcut::nn::MlpNetConfig{.hidden = 64}, /*seed=*/0);
  shortcut::Trainer<Model> more(again, shortcut::ShortcutConfig{}, oc, tc);
  more.resume("run/checkpoints/last");
  TableRows same_table{data.table};  // position 0 here; the checkpoint sets it to 6400
  more.run(same_table);              // metrics.jsonl goes on from step 100
  return same_table.position == 200 * 64 ? 0 : 1;
}
// [snippet end]
