// Checks that every rank of a data-parallel job starts from the same place: the same training
// configuration, the same resume point, the same weights. A rank started with another flag or
// another checkpoint would otherwise train on silently and average its gradients into the others'.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "shortcut/dist/communicator.hpp"

namespace shortcut::dist {

// FNV-1a over bytes: a fingerprint for comparing buffers across ranks, not a cryptographic hash.
inline uint64_t fingerprint(const void* data, size_t bytes, uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Every rank gets root's string.
template <Communicator C>
void broadcast_string(C& comm, std::string& s, int root = 0) {
  int64_t n = int64_t(s.size());
  comm.broadcast(&n, sizeof n, root);
  s.resize(size_t(n));
  if (n > 0) comm.broadcast(s.data(), size_t(n), root);
}

// The lowest rank for which `differs` is true, or -1 when none: collective.
template <Communicator C>
int first_rank_where(C& comm, bool differs) {
  int64_t r = differs ? comm.rank() : std::numeric_limits<int64_t>::max();
  comm.all_reduce(&r, 1, ReduceOp::Min);
  return r == std::numeric_limits<int64_t>::max() ? -1 : int(r);
}

// The top-level keys of two JSON objects that differ (or "(whole value)" when not objects).
inline std::string differing_keys(const nlohmann::json& a, const nlohmann::json& b) {
  if (!a.is_object() || !b.is_object()) return "(whole value)";
  std::string out;
  auto add = [&](const std::string& k) { out += (out.empty() ? "" : ", ") + k; };
  for (auto& [k, v] : a.items())
    if (!b.contains(k) || b.at(k) != v) add(k);
  for (auto& [k, v] : b.items())
    if (!a.contains(k)) add(k);
  return out;
}

// Collective: throws DistributedError on every rank when some rank's `value` differs from rank 0's.
// The message (the same on every rank: whichever prints first, the user reads it all) names the
// first such rank, the differing keys and both values.
template <Communicator C>
void require_same_on_all_ranks(C& comm, const std::string& what, const nlohmann::json& value) {
  if (comm.size() == 1) return;
  std::string mine = value.dump(), root = mine;
  broadcast_string(comm, root);
  const int r = first_rank_where(comm, root != mine);
  if (r < 0) return;
  std::string other = mine;
  broadcast_string(comm, other, r);
  throw DistributedError(cat("rank ", r, " of ", comm.size(), " disagrees with rank 0 on ", what, ": ",
                             differing_keys(nlohmann::json::parse(root), nlohmann::json::parse(other)), " (rank ", r,
                             " has ", other, ", rank 0 has ", root,
                             "); every rank must be started with the same command line and files"));
}

}  // namespace shortcut::dist
