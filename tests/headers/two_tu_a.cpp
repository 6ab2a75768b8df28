// Two translation units include every CPU header; linking them proves nothing is defined twice.
#include <shortcut/shortcut.hpp>
int shortcut_tu_a() { return int(shortcut::nn::DiTConfig::preset("tiny").tokens()); }
