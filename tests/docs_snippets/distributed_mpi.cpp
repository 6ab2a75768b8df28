// docs/distributed.md, "In your own program": compiled where MPI is found (shortcut::mpi); not run,
// as it trains the small DiT on the real data set.
// [snippet begin]
#include <shortcut/shortcut.hpp>
#include <shortcut/dist/mpi.hpp>          // link shortcut::mpi
int main(int argc, char** argv) {
  shortcut::dist::MpiSession mpi(argc, argv);
  shortcut::dist::MpiCommunicator comm;  // MPI_COMM_WORLD; comm.local_rank() picks a GPU
  using Be = shortcut::cpu::Backend<float>;
  Be be;
  // model and configs as for one process; tc.batch is the global batch
  shortcut::ShortcutModel<shortcut::nn::DiT<Be>> model(be, shortcut::nn::DiTConfig::preset("small"), /*seed=*/0);
  shortcut::TrainerConfig tc{.steps = 1000, .batch = 256, .out_dir = "run"};
  shortcut::Trainer<decltype(model), shortcut::dist::MpiCommunicator> trainer(model, shortcut::ShortcutConfig{},
                                                                            shortcut::AdamWConfig{}, tc, comm);
  auto data = shortcut::data::load_idx_dataset("data/fashion-mnist", "train");
  shortcut::data::ImageBatcher batcher(data);
  trainer.run([&](shortcut::Rng& rng, const shortcut::BatchSlice& s, std::vector<float>& x,
                  std::vector<int32_t>& y) {
    // this rank's s.rows() rows; local row i is global row s.global_row(i), drawn from rng exactly as
    // for the whole batch
    x.resize(size_t(s.rows()) * model.sample_size());
    y.resize(size_t(s.rows()));
    batcher.rows_into(s, rng, x.data(), y.data());
  });
}
// [snippet end]
