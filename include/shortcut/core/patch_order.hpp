// The order of a patch's values inside a token, shared by both backends' patch_gather/patch_scatter.
#pragma once

namespace shortcut {

// (c, row, col) as the PyTorch conv weight [D, C, p, p] expects, or (row, col, c) as the DiT's final
// linear produces for the PyTorch DiT's un-patchify.
enum class PatchOrder { ChannelMajor, ChannelMinor };

}  // namespace shortcut
