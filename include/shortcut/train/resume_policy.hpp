// What Trainer::resume compares between a checkpoint and the run that continues it.
//
// The fields that must match are those of Trainer::training_json(): the objective and its settings,
// the sampling schedule, the AdamW settings (with its parameter groups), the EMA rate and the global
// batch. The stored Adam moments, EMA and RNG position were made under them; continuing under others
// is a different experiment that merely starts from these weights, and doing it by accident (a
// changed default, a flag dropped from a command line) gives a curve that looks continued but is not.
// Deliberately not compared:
//   steps               training longer (or stopping earlier) is the point of resuming;
//   seed                the checkpoint's RNG seed and position replace it;
//   log_every, checkpoint_every, out_dir, progress, label, max_seconds
//                       where and how often the run reports, not what it computes.
// The network config is checked by the checkpoint loader itself (a different network cannot load).
//
// Checkpoints written before the sampling schedule was split from the shortcut configuration held
// a whole ShortcutConfig (with "objective": "shortcut" or "flow") as "shortcut", and for these two
// objectives no "objective": they are compared as the same settings in today's form.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "shortcut/train/objectives/flow_matching.hpp"
#include "shortcut/train/shortcut_config.hpp"

namespace shortcut {

struct ResumeOptions {
  // Continue under the current configuration although it differs from the checkpoint's (e.g. a
  // lower learning rate for the last stretch of a run): the weights, moments, EMA, step and RNG
  // position are loaded all the same.
  bool allow_config_change = false;
};

// Keys of a Trainer checkpoint's extra that are not training configuration.
inline constexpr const char* kDataSourceKey = "data_source";
inline constexpr const char* kUserKey = "user";

namespace detail {
// Field-by-field differences of two configs, nested objects by dotted path ("adamw.lr is 0.001 in the
// checkpoint, 0.002 now"); "" when they agree (numbers by value: 4 and 4.0 agree).
inline void nested_config_diff(const nlohmann::json& stored, const nlohmann::json& now, const std::string& prefix,
                               std::string& out) {
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
  if (!stored.is_object() || !now.is_object()) {
    if (stored != now)
      add((prefix.empty() ? std::string("the configuration") : prefix) + " is " + stored.dump() +
          " in the checkpoint, " + now.dump() + " now");
    return;
  }
  for (auto& [k, w] : now.items()) {
    const std::string name = prefix.empty() ? k : prefix + "." + k;
    auto it = stored.find(k);
    if (it == stored.end()) add(name + " is not in the checkpoint (" + w.dump() + " now)");
    else nested_config_diff(*it, w, name, out);
  }
  for (auto& [k, g] : stored.items())
    if (!now.contains(k)) add((prefix.empty() ? k : prefix + "." + k) + " is " + g.dump() + " in the checkpoint, unset now");
}
}  // namespace detail

// A checkpoint's training configuration in today's form (see the top of this file).
inline nlohmann::json upgrade_training_json(nlohmann::json stored) {
  if (!stored.is_object() || !stored.contains("shortcut") || !stored["shortcut"].is_object()) return stored;
  const nlohmann::json old = stored["shortcut"];
  if (!stored.contains("objective")) {  // the shortcut objective or flow matching, by its ShortcutConfig
    const bool flow = old.value("objective", "shortcut") == "flow";
    stored["objective"] = flow ? FlowMatchingConfig::from_json(old).to_json() : ShortcutConfig::from_json(old).to_json();
  }
  stored["shortcut"] = SamplingSchedule::from_json(old).to_json();  // every objective's: the schedule's fields only
  return stored;
}

// The differences between a checkpoint's extra (its keys that are not configuration removed) and the
// current training configuration; "" when they agree.
inline std::string training_config_diff(nlohmann::json stored, const nlohmann::json& now) {
  if (stored.is_object()) {
    stored.erase(kDataSourceKey);
    stored.erase(kUserKey);
  }
  std::string out;
  detail::nested_config_diff(upgrade_training_json(std::move(stored)), now, "", out);
  return out;
}

}  // namespace shortcut
