// docs/checkpoints.md, "C++: files, folders and arenas": run by CTest where make_dit_checkpoint wrote
// run/checkpoints/last. The umbrella header is included first: the snippet's own #include sits inside
// main(), where #pragma once makes it empty.
#include <shortcut/shortcut.hpp>

int main() {
  // [snippet begin]
  #include <shortcut/shortcut.hpp>
  namespace io = shortcut::io;
  using Be = shortcut::cpu::Backend<float>;
  Be be;

  // the network config stored in a file or folder; the EMA weights into an arena's Role::Ema (to sample,
  // load_generator above is the one call)
  auto cfg = shortcut::nn::DiTConfig::from_json(io::read_config("run/checkpoints/last"));
  shortcut::nn::DiT<Be> net(be, cfg);
  shortcut::ParamArena<Be> arena(be, net.layout());
  io::load_sampling_weights("run/checkpoints/last", net, arena);

  // one weight set as a single file (EMA by default)
  io::save_weights("dit-s.safetensors", net, arena);

  // training state: save and resume (Trainer::save and Trainer::resume do this, with the trainer's RNG
  // position and the 'training' metadata)
  io::save_checkpoint("run/checkpoints/step_10000", net, arena, io::TrainState{.step = 10000});
  io::TrainState st = io::load_checkpoint("run/checkpoints/step_10000", net, arena);  // Param, Ema, AdamM, AdamV
  // [snippet end]
  return st.step == 10000 ? 0 : 1;
}
