// The second translation unit of checkpoint_io: the io headers included here and in
// checkpoint_io_test.cpp must link into one program (inline functions only, no duplicate symbols).
#include <shortcut/io/checkpoint.hpp>
#include <shortcut/io/safetensors.hpp>

#include <string>
#include <vector>

std::vector<float> second_tu_roundtrip(const std::string& path) {
  const std::vector<float> v = {1.0f, -2.0f, 0.5f};
  shortcut::io::SafetensorsWriter w;
  w.add("v", {3}, v.data());
  w.write(path);
  return shortcut::io::SafetensorsReader(path).read<float>("v");
}
