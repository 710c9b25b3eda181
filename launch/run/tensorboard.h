// tensorboard.h: a run's TensorBoard event file (<run_dir>/tb/events.out.tfevents.*), written
// beside metrics.jsonl by the lead rank (run_folder.h) so that `tensorboard --logdir runs`
// shows loom runs as it shows PyTorch's.
//
// The format is TensorBoard's: TFRecord framing (the data's length as 8 little-endian bytes,
// the masked CRC-32C of those 8 bytes, the data, the masked CRC-32C of the data) around Event
// protocol buffers (tensorboard.proto): file_version first, then per step a Summary of
// simple_value scalars (train/loss, val/loss, train/lr, train/grad_norm, perf/tokens_per_s,
// perf/mfu, train/skipped) at the step and wall time, and the resolved config once as text
// (the text dashboard's plugin metadata and a string tensor).
//
// Every run, and every resumption of one, writes a new file, as TensorBoard expects; a
// resumption starts its file with SessionLog START at its first step, which tells TensorBoard
// that the steps the old file holds from there on were run again. Each step is one write(2)
// of whole records, so a crash loses at most the step being written, and a torn last record
// is what TensorBoard's readers skip.
//
// Built with protobuf (cmake/Dependencies.cmake); a build without it (GPU-only) has
// tensorboard_none.cpp instead, and its runs write no event files.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace loom {

class TensorBoardLog {
 public:
  virtual ~TensorBoardLog() = default;
  // One step's metrics.jsonl line: its "step" and the scalars it holds. A write that fails
  // (disk full) is reported once on stderr and ends the event file; the run goes on.
  virtual void log(const nlohmann::json& metrics) = 0;
  virtual const std::string& path() const = 0;
};

// Creates `dir` and a new event file in it (name: events.out.tfevents.<seconds>.<host>.<pid>.<n>,
// n making it unique), and writes its opening events: file_version, SessionLog START when
// resuming from `resume_step` (>= 0), and `config_toml` as the text summary "config" at the
// first step. UserError naming the path when it cannot. In a build without protobuf: a one-line
// note on stderr, and nullptr.
std::unique_ptr<TensorBoardLog> open_tensorboard_log(const std::string& dir, const std::string& config_toml,
                                                     int64_t resume_step);

}  // namespace loom
