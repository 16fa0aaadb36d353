"""The fixed files of the C++ demo: a minimal librknnrt header, a .npy reader/writer and the demo's main.

They are the same for every model; what is model-specific (the model file, the inputs) goes in the generated
``demo_config.h`` (see ``cpp.py``). The header declares only what the demo calls, from librknnrt's documented C
API; its layouts must agree with ``rkfarm_agent.backends.rknnrt.capi`` (tests check the sizes and the constants).
"""

from __future__ import annotations

# rknn_tensor_type values, as the header below declares them (and librknnrt defines them).
TENSOR_TYPES = {
    "float32": 0,
    "float16": 1,
    "int8": 2,
    "uint8": 3,
    "int16": 4,
    "uint16": 5,
    "int32": 6,
    "uint32": 7,
    "int64": 8,
    "bool": 9,
}

RKNN_API_H = r"""/*
 * Minimal declarations of librknnrt's documented C API, written by rkfarm for this demo (rkfarm ships no vendor
 * header). Only what main.cc calls is here. The vendor's rknn_api.h declares the same names with the same
 * layouts, so it can replace this file if you prefer it.
 */
#ifndef RKFARM_RKNN_API_H
#define RKFARM_RKNN_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if UINTPTR_MAX == 0xffffffffu
typedef uint32_t rknn_context; /* 32-bit targets */
#else
typedef uint64_t rknn_context;
#endif

#define RKNN_SUCC 0
#define RKNN_MAX_DIMS 16
#define RKNN_MAX_NAME_LEN 256

typedef enum {
    RKNN_QUERY_IN_OUT_NUM = 0,
    RKNN_QUERY_INPUT_ATTR = 1,
    RKNN_QUERY_OUTPUT_ATTR = 2,
    RKNN_QUERY_PERF_DETAIL = 3,
    RKNN_QUERY_PERF_RUN = 4,
    RKNN_QUERY_SDK_VERSION = 5
} rknn_query_cmd;

typedef enum {
    RKNN_TENSOR_FLOAT32 = 0,
    RKNN_TENSOR_FLOAT16 = 1,
    RKNN_TENSOR_INT8 = 2,
    RKNN_TENSOR_UINT8 = 3,
    RKNN_TENSOR_INT16 = 4,
    RKNN_TENSOR_UINT16 = 5,
    RKNN_TENSOR_INT32 = 6,
    RKNN_TENSOR_UINT32 = 7,
    RKNN_TENSOR_INT64 = 8,
    RKNN_TENSOR_BOOL = 9
} rknn_tensor_type;

typedef enum {
    RKNN_TENSOR_NCHW = 0,
    RKNN_TENSOR_NHWC = 1,
    RKNN_TENSOR_NC1HWC2 = 2,
    RKNN_TENSOR_UNDEFINED = 3
} rknn_tensor_format;

typedef enum {
    RKNN_TENSOR_QNT_NONE = 0,
    RKNN_TENSOR_QNT_DFP = 1,
    RKNN_TENSOR_QNT_AFFINE_ASYMMETRIC = 2
} rknn_tensor_qnt_type;

typedef struct {
    uint32_t n_input;
    uint32_t n_output;
} rknn_input_output_num;

typedef struct {
    uint32_t index;                   /* set before RKNN_QUERY_INPUT_ATTR / RKNN_QUERY_OUTPUT_ATTR */
    uint32_t n_dims;
    uint32_t dims[RKNN_MAX_DIMS];
    char name[RKNN_MAX_NAME_LEN];
    uint32_t n_elems;
    uint32_t size;
    rknn_tensor_format fmt;
    rknn_tensor_type type;
    rknn_tensor_qnt_type qnt_type;
    int8_t fl;
    int32_t zp;
    float scale;
    uint32_t w_stride;
    uint32_t size_with_stride;
    uint8_t pass_through;
    uint32_t h_stride;
} rknn_tensor_attr;

typedef struct {
    char api_version[256];
    char drv_version[256];
} rknn_sdk_version;

typedef struct {
    uint32_t index;
    void *buf;
    uint32_t size;                    /* bytes in buf */
    uint8_t pass_through;             /* 1: buf is already in the model's layout, type and quantization */
    rknn_tensor_type type;            /* the type of buf's values; the runtime converts them */
    rknn_tensor_format fmt;           /* the layout of buf (4-D inputs) */
} rknn_input;

typedef struct {
    uint8_t want_float;               /* 1: converted to float32 */
    uint8_t is_prealloc;              /* 0: the runtime allocates buf; give it back with rknn_outputs_release */
    uint32_t index;
    void *buf;
    uint32_t size;
} rknn_output;

int rknn_init(rknn_context *context, void *model, uint32_t size, uint32_t flag, void *extend);
int rknn_destroy(rknn_context context);
int rknn_query(rknn_context context, rknn_query_cmd cmd, void *info, uint32_t size);
int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input inputs[]);
int rknn_run(rknn_context context, void *extend);
int rknn_outputs_get(rknn_context context, uint32_t n_outputs, rknn_output outputs[], void *extend);
int rknn_outputs_release(rknn_context context, uint32_t n_outputs, rknn_output outputs[]);

#ifdef __cplusplus
}
#endif

#endif /* RKFARM_RKNN_API_H */
"""

NPY_H = r"""// A minimal .npy (NumPy array file) reader and writer: C-ordered arrays of plain numeric types.
#ifndef RKFARM_DEMO_NPY_H
#define RKFARM_DEMO_NPY_H

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace npy {

struct Array {
    std::string descr;            // NumPy's type string: "<f4", "|u1", ...
    std::vector<size_t> shape;
    size_t itemsize = 0;
    std::vector<uint8_t> data;    // count() * itemsize bytes, C order
    size_t count() const;
};

// Reads `path`; on failure returns false with a one-line reason in `error`.
bool load(const std::string &path, Array *out, std::string *error);

// Writes `nbytes` of `data` as an array of `descr` with `shape` (format version 1.0).
bool save(const std::string &path, const std::string &descr, const std::vector<size_t> &shape, const void *data,
          size_t nbytes, std::string *error);

}  // namespace npy

#endif
"""

NPY_CC = r"""#include "npy.h"

#include <cstdlib>
#include <fstream>
#include <iterator>

namespace npy {
namespace {

const char kMagic[] = "\x93NUMPY";

bool fail(std::string *error, const std::string &message) {
    if (error) *error = message;
    return false;
}

// Position of the value that follows 'key': in the header's dict literal.
bool value_of(const std::string &header, const char *key, size_t *pos) {
    const std::string quoted = std::string("'") + key + "'";
    size_t at = header.find(quoted);
    if (at == std::string::npos) return false;
    at = header.find(':', at + quoted.size());
    if (at == std::string::npos) return false;
    for (++at; at < header.size() && header[at] == ' '; ++at) {
    }
    *pos = at;
    return at < header.size();
}

}  // namespace

size_t Array::count() const {
    size_t n = 1;
    for (size_t d : shape) n *= d;
    return n;
}

bool load(const std::string &path, Array *out, std::string *error) {
    std::ifstream file(path, std::ios::binary);
    if (!file) return fail(error, path + ": cannot open");
    const std::string content((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (content.size() < 10 || content.compare(0, 6, kMagic, 6) != 0) return fail(error, path + ": not a .npy file");
    const unsigned major = static_cast<unsigned char>(content[6]);
    size_t header_len = 0, offset = 0;
    if (major == 1) {
        header_len = static_cast<unsigned char>(content[8]) | (static_cast<unsigned char>(content[9]) << 8);
        offset = 10;
    } else if (major == 2 || major == 3) {
        if (content.size() < 12) return fail(error, path + ": truncated .npy header");
        for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(content[8 + i]);
        offset = 12;
    } else {
        return fail(error, path + ": unsupported .npy format version " + std::to_string(major));
    }
    if (offset + header_len > content.size()) return fail(error, path + ": truncated .npy header");
    const std::string header = content.substr(offset, header_len);

    size_t pos = 0;
    if (!value_of(header, "descr", &pos) || header[pos] != '\'')
        return fail(error, path + ": .npy header has no descr");
    const size_t end = header.find('\'', pos + 1);
    if (end == std::string::npos) return fail(error, path + ": bad descr in .npy header");
    out->descr = header.substr(pos + 1, end - pos - 1);
    if (out->descr.size() < 3) return fail(error, path + ": unsupported dtype '" + out->descr + "'");
    out->itemsize = static_cast<size_t>(std::strtoul(out->descr.c_str() + 2, nullptr, 10));
    if (out->itemsize == 0) return fail(error, path + ": unsupported dtype '" + out->descr + "'");

    if (!value_of(header, "fortran_order", &pos)) return fail(error, path + ": .npy header has no fortran_order");
    if (header.compare(pos, 4, "True") == 0)
        return fail(error, path + ": Fortran-ordered array; save it with numpy.ascontiguousarray first");

    if (!value_of(header, "shape", &pos) || header[pos] != '(') return fail(error, path + ": .npy header has no shape");
    const size_t close = header.find(')', pos);
    if (close == std::string::npos) return fail(error, path + ": bad shape in .npy header");
    out->shape.clear();
    std::string dim;
    for (size_t i = pos + 1; i <= close; ++i) {
        const char c = header[i];
        if (c >= '0' && c <= '9') {
            dim += c;
        } else if (c == ',' || c == ')') {
            if (!dim.empty()) out->shape.push_back(static_cast<size_t>(std::strtoull(dim.c_str(), nullptr, 10)));
            dim.clear();
        } else if (c != ' ' && c != 'L') {
            return fail(error, path + ": bad shape in .npy header");
        }
    }

    const size_t data_at = offset + header_len;
    const size_t nbytes = out->count() * out->itemsize;
    if (content.size() - data_at < nbytes)
        return fail(error, path + ": truncated: " + std::to_string(nbytes) + " data bytes expected, " +
                               std::to_string(content.size() - data_at) + " present");
    out->data.assign(content.begin() + static_cast<std::ptrdiff_t>(data_at),
                     content.begin() + static_cast<std::ptrdiff_t>(data_at + nbytes));
    return true;
}

bool save(const std::string &path, const std::string &descr, const std::vector<size_t> &shape, const void *data,
          size_t nbytes, std::string *error) {
    std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': (";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i) dict += ", ";
        dict += std::to_string(shape[i]);
    }
    if (shape.size() == 1) dict += ",";
    dict += "), }";
    // magic (6) + version (2) + length (2) + dict + padding + '\n' is a multiple of 64 bytes
    const size_t unpadded = 10 + dict.size() + 1;
    dict.append((64 - unpadded % 64) % 64, ' ');
    dict += '\n';
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    if (!file) return fail(error, path + ": cannot create");
    const char version[2] = {1, 0};
    const char length[2] = {static_cast<char>(dict.size() & 0xff), static_cast<char>((dict.size() >> 8) & 0xff)};
    file.write(kMagic, 6);
    file.write(version, 2);
    file.write(length, 2);
    file.write(dict.data(), static_cast<std::streamsize>(dict.size()));
    file.write(static_cast<const char *>(data), static_cast<std::streamsize>(nbytes));
    if (!file) return fail(error, path + ": write failed");
    return true;
}

}  // namespace npy
"""
