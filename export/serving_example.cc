// Serving a cml_tf SavedModel from C++: the code path TF Serving's model server is built on.
//
// Loads an export with tensorflow::LoadSavedModel (tag "serve"), feeds a batch of raw ids
// (tf.string, shape [batch]) to the id input of a signature (default "serving_default") and
// prints every output of that signature as one JSON object on stdout. For recommend_for_items
// (input item_ids) the ids are one row, [1, n]: the items one anonymous user likes. The
// filtered signatures (recommend_filtered, similar_items_filtered,
// recommend_for_items_filtered) also get include_items and exclude_items, [batch, L], the
// same list in every row: --include_items=ID,ID,... and --exclude_items=ID,ID,... (without
// the flag, one empty id: no filter).
//
// ScaNN exports contain ScaNN's custom ops: pass --ops_library=<site-packages>/scann/scann_ops/
// cc/_scann_ops.so so that they are registered (TF_LoadLibrary) before the graph is loaded.
// Without it LoadSavedModel fails with "Op type not registered 'ScannSearch...'", which is what
// a stock TF Serving model server says about such an export too.
//
// Build (headers and libraries come from the tensorflow pip package itself; see
// export/README.md, "Serving from C++"): `python export/build_example.py`, or
//
//   TF=$(python -c "import tensorflow as tf; print(tf.sysconfig.get_lib())")
//   g++ -O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -DEIGEN_MAX_ALIGN_BYTES=64 \
//       -I"$TF/include" export/serving_example.cc -o serving_example \
//       -L"$TF" -l:libtensorflow_cc.so.2 -l:libtensorflow_framework.so.2 -Wl,-rpath,"$TF"
//
// Run:
//
//   ./serving_example [--ops_library=PATH]... [--signature=NAME] [--inter_op_threads=N]
//                     [--include_items=ID,...] [--exclude_items=ID,...] [--latency=CALLS]
//                     EXPORT_DIR ID [ID...]
//
// --inter_op_threads sets the session's ConfigProto.inter_op_parallelism_threads: 0 (default)
// lets TensorFlow size its inter-op thread pool; a negative value runs every op in the calling
// thread, which saves the hand-offs between threads, a large share of a small request. In TF
// Serving the same field is set by --tensorflow_inter_op_parallelism.
//
// With --latency=N it times the signature instead of printing its outputs: after N / 10 warm-up
// calls, N calls of one id each (cycling through the ids; with the filters given, if any),
// each a separate Session::Run as a single request to a model server is; it prints
// {"signature", "calls", "p50_ms", "p99_ms", "mean_ms"}. This is the serving latency without
// Python's per-call cost.
//
// Exit codes: 0 success, 1 usage, 2 ops library failed to load, 3 LoadSavedModel failed,
// 4 signature or input problem, 5 Session::Run failed.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "tensorflow/c/c_api.h"
#include "tensorflow/cc/saved_model/loader.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/public/session_options.h"

namespace {

// tensorflow::kSavedModelTagServe lives in tag_constants.h, which the pip package does not ship.
constexpr char kServeTag[] = "serve";

std::string JsonString(const std::string& s) {
  std::ostringstream out;
  out << '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out << "\\\""; break;
      case '\\': out << "\\\\"; break;
      case '\n': out << "\\n"; break;
      case '\r': out << "\\r"; break;
      case '\t': out << "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out << buf;
        } else {
          out << c;
        }
    }
  }
  out << '"';
  return out.str();
}

std::string JsonNumber(double v) {
  if (std::isnan(v)) return "NaN";  // Python's json module reads NaN / Infinity
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

// One element of a tensor as JSON.
std::string Element(const tensorflow::Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case tensorflow::DT_STRING:
      return JsonString(std::string(t.flat<tensorflow::tstring>()(i)));
    case tensorflow::DT_FLOAT: return JsonNumber(t.flat<float>()(i));
    case tensorflow::DT_DOUBLE: return JsonNumber(t.flat<double>()(i));
    case tensorflow::DT_BOOL: return t.flat<bool>()(i) ? "true" : "false";
    case tensorflow::DT_INT32: return std::to_string(t.flat<int32_t>()(i));
    case tensorflow::DT_INT64: return std::to_string(t.flat<int64_t>()(i));
    default: return "null";
  }
}

// A tensor as nested JSON lists, row-major.
std::string ToJson(const tensorflow::Tensor& t) {
  const int rank = t.dims();
  if (rank == 0) return Element(t, 0);
  std::ostringstream out;
  std::vector<int64_t> dims(t.shape().dim_sizes().begin(), t.shape().dim_sizes().end());
  // Recursive lambda over the dimensions.
  int64_t next = 0;
  std::function<void(int)> emit = [&](int d) {
    out << '[';
    for (int64_t i = 0; i < dims[d]; ++i) {
      if (i) out << ',';
      if (d + 1 == rank) {
        out << Element(t, next++);
      } else {
        emit(d + 1);
      }
    }
    out << ']';
  };
  emit(0);
  return out.str();
}

int Usage() {
  std::cerr << "usage: serving_example [--ops_library=PATH]... [--signature=NAME] "
               "[--inter_op_threads=N] [--include_items=ID,...] [--exclude_items=ID,...] "
               "[--latency=CALLS] EXPORT_DIR ID [ID...]\n";
  return 1;
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> values;
  std::string value;
  std::istringstream in(text);
  while (std::getline(in, value, ',')) values.push_back(value);
  return values.empty() ? std::vector<std::string>{""} : values;
}

// A string tensor of `rows` rows, each the ids `row` ([rows, row.size()]), or the ids as one
// vector ([ids.size()]) when rows < 0.
tensorflow::Tensor Strings(const std::vector<std::string>& row, int64_t rows) {
  const int64_t width = static_cast<int64_t>(row.size());
  tensorflow::Tensor tensor(tensorflow::DT_STRING,
                            rows < 0 ? tensorflow::TensorShape({width})
                                     : tensorflow::TensorShape({rows, width}));
  auto flat = tensor.flat<tensorflow::tstring>();
  for (int64_t i = 0; i < flat.size(); ++i) flat(i) = row[i % width];
  return tensor;
}

// The feeds of one request: the ids into the id input (one row for item_ids, a vector
// otherwise) and, for a filtered signature, the filter lists repeated for every row.
using Feeds = std::vector<std::pair<std::string, tensorflow::Tensor>>;
Feeds MakeFeeds(const tensorflow::SignatureDef& signature, const std::vector<std::string>& ids,
                const std::vector<std::string>& include, const std::vector<std::string>& exclude) {
  Feeds feeds;
  const bool one_row = signature.inputs().count("item_ids") > 0;
  const int64_t rows = ids.empty() ? 0 : one_row ? 1 : static_cast<int64_t>(ids.size());
  for (const auto& entry : signature.inputs()) {
    const std::string& key = entry.first;
    if (key == "include_items") {
      feeds.emplace_back(entry.second.name(), Strings(include, rows));
    } else if (key == "exclude_items") {
      feeds.emplace_back(entry.second.name(), Strings(exclude, rows));
    } else if (ids.empty()) {  // an empty batch
      feeds.emplace_back(entry.second.name(),
                         tensorflow::Tensor(tensorflow::DT_STRING,
                                            one_row ? tensorflow::TensorShape({0, 0})
                                                    : tensorflow::TensorShape({0})));
    } else {
      feeds.emplace_back(entry.second.name(), Strings(ids, one_row ? 1 : -1));
    }
  }
  return feeds;
}

// --latency mode: one Session::Run per id, timed; prints the percentiles as JSON.
int TimeSingleCalls(tensorflow::Session* session, const tensorflow::SignatureDef& signature,
                    const std::string& signature_name,
                    const std::vector<std::string>& output_names,
                    const std::vector<std::string>& ids, const std::vector<std::string>& include,
                    const std::vector<std::string>& exclude, long calls) {
  std::vector<Feeds> requests;
  for (const std::string& id : ids) requests.push_back(MakeFeeds(signature, {id}, include, exclude));
  std::vector<double> millis;
  std::vector<tensorflow::Tensor> outputs;
  const long warmup = std::max(1L, calls / 10);
  for (long i = 0; i < warmup + calls; ++i) {
    const auto start = std::chrono::steady_clock::now();
    tensorflow::Status status = session->Run(requests[i % requests.size()], output_names, {},
                                             &outputs);
    const auto stop = std::chrono::steady_clock::now();
    if (!status.ok()) {
      std::cerr << "Session::Run failed: " << status.ToString() << "\n";
      return 5;
    }
    if (i >= warmup) {
      millis.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
    }
  }
  auto percentile = [&millis](double q) {  // nearest rank on the sorted times
    const size_t rank = static_cast<size_t>(std::ceil(q * millis.size()));
    return millis[std::min(millis.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  double total = 0;
  for (double m : millis) total += m;
  std::sort(millis.begin(), millis.end());
  std::cout << "{\"signature\":" << JsonString(signature_name) << ",\"calls\":" << calls
            << ",\"p50_ms\":" << JsonNumber(percentile(0.5))
            << ",\"p99_ms\":" << JsonNumber(percentile(0.99))
            << ",\"mean_ms\":" << JsonNumber(total / millis.size()) << "}" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> ops_libraries;
  std::string signature_name = "serving_default";
  long latency_calls = 0;
  std::vector<std::string> include{""}, exclude{""};
  tensorflow::SessionOptions session_options;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--ops_library=", 0) == 0) {
      ops_libraries.push_back(arg.substr(14));
    } else if (arg.rfind("--signature=", 0) == 0) {
      signature_name = arg.substr(12);
    } else if (arg.rfind("--latency=", 0) == 0) {
      latency_calls = std::atol(arg.c_str() + 10);
      if (latency_calls <= 0) return Usage();
    } else if (arg.rfind("--include_items=", 0) == 0) {
      include = SplitList(arg.substr(16));
    } else if (arg.rfind("--exclude_items=", 0) == 0) {
      exclude = SplitList(arg.substr(16));
    } else if (arg.rfind("--inter_op_threads=", 0) == 0) {
      session_options.config.set_inter_op_parallelism_threads(std::atoi(arg.c_str() + 19));
    } else if (arg == "--") {
      for (++i; i < argc; ++i) positional.push_back(argv[i]);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.empty()) return Usage();
  const std::string export_dir = positional[0];
  const std::vector<std::string> ids(positional.begin() + 1, positional.end());

  // Custom op libraries (ScaNN) register their ops with the process-wide registry.
  for (const std::string& path : ops_libraries) {
    TF_Status* status = TF_NewStatus();
    TF_Library* library = TF_LoadLibrary(path.c_str(), status);
    if (TF_GetCode(status) != TF_OK || library == nullptr) {
      std::cerr << "cannot load ops library " << path << ": " << TF_Message(status) << "\n";
      TF_DeleteStatus(status);
      return 2;
    }
    TF_DeleteStatus(status);  // the library stays loaded for the life of the process
  }

  tensorflow::SavedModelBundle bundle;
  tensorflow::RunOptions run_options;
  tensorflow::Status status = tensorflow::LoadSavedModel(
      session_options, run_options, export_dir, {kServeTag}, &bundle);
  if (!status.ok()) {
    std::cerr << "LoadSavedModel failed: " << status.ToString() << "\n";
    return 3;
  }

  const auto& signatures = bundle.meta_graph_def.signature_def();
  auto found = signatures.find(signature_name);
  if (found == signatures.end()) {
    std::cerr << "no signature " << signature_name << "; the export has:";
    for (const auto& entry : signatures) std::cerr << " " << entry.first;
    std::cerr << "\n";
    return 4;
  }
  const tensorflow::SignatureDef& signature = found->second;
  std::string input_key;
  for (const auto& entry : signature.inputs()) {
    const bool filter = entry.first == "include_items" || entry.first == "exclude_items";
    if (entry.second.dtype() != tensorflow::DT_STRING) {
      std::cerr << "input " << entry.first << " is not a string tensor: this example feeds "
                   "string ids only\n";
      return 4;
    }
    if (!filter && !input_key.empty()) {
      std::cerr << "signature " << signature_name << " has the inputs " << input_key << " and "
                << entry.first << "; this example feeds one list of ids (and the filters)\n";
      return 4;
    }
    if (!filter) input_key = entry.first;
  }

  std::vector<std::string> output_keys, output_names;
  for (const auto& entry : signature.outputs()) {  // a Map: sort for a stable order
    output_keys.push_back(entry.first);
  }
  std::sort(output_keys.begin(), output_keys.end());
  for (const auto& key : output_keys) output_names.push_back(signature.outputs().at(key).name());

  if (latency_calls > 0) {
    if (ids.empty()) return Usage();
    return TimeSingleCalls(bundle.session.get(), signature, signature_name, output_names, ids,
                           include, exclude, latency_calls);
  }

  std::vector<tensorflow::Tensor> outputs;
  status = bundle.session->Run(MakeFeeds(signature, ids, include, exclude), output_names, {},
                               &outputs);
  if (!status.ok()) {
    std::cerr << "Session::Run failed: " << status.ToString() << "\n";
    return 5;
  }

  std::cout << "{\"signature\":" << JsonString(signature_name) << ",\"input\":"
            << JsonString(input_key) << ",\"outputs\":{";
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (i) std::cout << ',';
    std::cout << JsonString(output_keys[i]) << ":{\"dtype\":"
              << JsonString(tensorflow::DataTypeString(outputs[i].dtype()))
              << ",\"shape\":" << JsonString(outputs[i].shape().DebugString())
              << ",\"value\":" << ToJson(outputs[i]) << "}";
  }
  std::cout << "}}" << std::endl;
  return 0;
}
