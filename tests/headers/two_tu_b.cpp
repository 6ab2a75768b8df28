#include <shortcut/shortcut.hpp>
int shortcut_tu_a();
int main() { return shortcut_tu_a() == 49 && shortcut::nn::DiTConfig::preset("small").tokens() == 49 ? 0 : 1; }
