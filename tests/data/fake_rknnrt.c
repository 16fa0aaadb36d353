/*
 * TEST DOUBLE for librknnrt, Rockchip's NPU runtime, which cannot exist on a PC. It implements the part of
 * the documented RKNN C API that rkfarm's rknnrt backend calls, with the documented struct layouts, over a
 * trivial "model" so that tests can check the backend's plumbing (struct layouts, dtype/format/pass-through
 * handling, want_float outputs, queries) end to end through a real agent.
 *
 * Model file: "RKNN" 00 00 00 00, u64 format version, u64 length, then "FAKE", u32 H, W, C, f32 mean, f32 std.
 * Input "images": uint8 NHWC [1,H,W,C]. The runtime converts it as librknnrt does: (x - mean) / std unless
 * pass_through, from NHWC or NCHW, uint8 or float32. Output "channel_means": per-channel mean, [1,C].
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t rknn_context;

typedef struct { uint32_t n_input, n_output; } rknn_input_output_num;
typedef struct {
    uint32_t index, n_dims, dims[16]; char name[256]; uint32_t n_elems, size;
    int fmt, type, qnt_type; int8_t fl; int32_t zp; float scale; uint32_t w_stride, size_with_stride;
    uint8_t pass_through; uint32_t h_stride;
} rknn_tensor_attr;
typedef struct { uint32_t index; void *buf; uint32_t size; uint8_t pass_through; int type; int fmt; } rknn_input;
typedef struct { uint8_t want_float, is_prealloc; uint32_t index; void *buf; uint32_t size; } rknn_output;
typedef struct { int64_t run_duration; } rknn_perf_run;
typedef struct { char *perf_data; uint64_t data_len; } rknn_perf_detail;
typedef struct { char api_version[256], drv_version[256]; } rknn_sdk_version;
typedef struct {
    uint32_t total_weight_size, total_internal_size; uint64_t total_dma_allocated_size;
    uint32_t total_sram_size, free_sram_size, reserved[10];
} rknn_mem_size;

enum { FMT_NCHW = 0, FMT_NHWC = 1, FMT_UNDEFINED = 3, T_FLOAT32 = 0, T_INT8 = 2, T_UINT8 = 3 };

typedef struct {
    uint32_t h, w, c, flags, core_mask; float mean, std;
    float *pixels;  /* NHWC, converted */
    float *means;   /* C */
    int have_input, have_run;
} fake_ctx;

static const char PERF[] =
    "ID  OpType         DataType  Target  InputShape     OutputShape    Time(us)  FullName\n"
    "1   InputOperator  UINT8     CPU     \\              (1,H,W,C)      5         InputOperator:images\n"
    "2   Conv           INT8      NPU     (1,C,H,W)      (1,C,H,W)      30        Conv:scale\n"
    "3   ReduceMean     INT8      NPU     (1,C,H,W)      (1,C)          7         ReduceMean:channel_means\n"
    "Total Operator Elapsed Per Frame Time(us): 42\n";

int rknn_init(rknn_context *context, void *model, uint32_t size, uint32_t flag, void *extend) {
    const uint8_t *m = (const uint8_t *)model;
    (void)extend;
    if (size < 24 + 24 || memcmp(m, "RKNN", 4) != 0 || memcmp(m + 24, "FAKE", 4) != 0) return -6;
    fake_ctx *ctx = calloc(1, sizeof(fake_ctx));
    memcpy(&ctx->h, m + 28, 4); memcpy(&ctx->w, m + 32, 4); memcpy(&ctx->c, m + 36, 4);
    memcpy(&ctx->mean, m + 40, 4); memcpy(&ctx->std, m + 44, 4);
    if (ctx->h == 0 || ctx->w == 0 || ctx->c == 0 || ctx->h * ctx->w * ctx->c > (1u << 26)) { free(ctx); return -6; }
    ctx->flags = flag;
    ctx->pixels = calloc((size_t)ctx->h * ctx->w * ctx->c, sizeof(float));
    ctx->means = calloc(ctx->c, sizeof(float));
    *context = (rknn_context)(uintptr_t)ctx;
    return 0;
}

int rknn_destroy(rknn_context context) {
    fake_ctx *ctx = (fake_ctx *)(uintptr_t)context;
    if (!ctx) return -1;
    free(ctx->pixels); free(ctx->means); free(ctx);
    return 0;
}

int rknn_set_core_mask(rknn_context context, int mask) {
    fake_ctx *ctx = (fake_ctx *)(uintptr_t)context;
    if (mask != 0 && mask != 1 && mask != 2 && mask != 4 && mask != 3 && mask != 7 && mask != 0xffff) return -5;
    ctx->core_mask = (uint32_t)mask;
    return 0;
}

int rknn_query(rknn_context context, int cmd, void *info, uint32_t size) {
    fake_ctx *ctx = (fake_ctx *)(uintptr_t)context;
    switch (cmd) {
    case 0: {
        if (size != sizeof(rknn_input_output_num)) return -5;
        rknn_input_output_num *n = info; n->n_input = 1; n->n_output = 1; return 0;
    }
    case 1: case 2: {
        if (size != sizeof(rknn_tensor_attr)) return -5;
        rknn_tensor_attr *a = info;
        if (a->index != 0) return -5;
        memset(a, 0, sizeof(*a));
        if (cmd == 1) {
            a->n_dims = 4; a->dims[0] = 1; a->dims[1] = ctx->h; a->dims[2] = ctx->w; a->dims[3] = ctx->c;
            strcpy(a->name, "images"); a->n_elems = ctx->h * ctx->w * ctx->c; a->size = a->n_elems;
            a->fmt = FMT_NHWC; a->type = T_UINT8; a->qnt_type = 2; a->zp = -128; a->scale = 0.0078125f;
        } else {
            a->n_dims = 2; a->dims[0] = 1; a->dims[1] = ctx->c;
            strcpy(a->name, "channel_means"); a->n_elems = ctx->c; a->size = ctx->c;
            a->fmt = FMT_UNDEFINED; a->type = T_INT8; a->qnt_type = 2; a->zp = 0; a->scale = 0.01f;
        }
        return 0;
    }
    case 3: {
        if (!(ctx->flags & 0x08) || !ctx->have_run) return -1;
        rknn_perf_detail *d = info; d->perf_data = (char *)PERF; d->data_len = sizeof(PERF) - 1; return 0;
    }
    case 4: { rknn_perf_run *p = info; p->run_duration = 42; return 0; }
    case 5: {
        rknn_sdk_version *v = info;
        strcpy(v->api_version, "fake-librknnrt 0.0 (rkfarm test double)"); strcpy(v->drv_version, "none");
        return 0;
    }
    case 6: {
        if (size != sizeof(rknn_mem_size)) return -5;
        rknn_mem_size *m = info; memset(m, 0, sizeof(*m));
        m->total_weight_size = 1000; m->total_internal_size = 2048; m->total_dma_allocated_size = 4096;
        return 0;
    }
    default: return -5;
    }
}

int rknn_inputs_set(rknn_context context, uint32_t n_inputs, rknn_input inputs[]) {
    fake_ctx *ctx = (fake_ctx *)(uintptr_t)context;
    uint32_t n = ctx->h * ctx->w * ctx->c;
    if (n_inputs != 1 || inputs[0].index != 0) return -5;
    const rknn_input *in = &inputs[0];
    int f32 = in->type == T_FLOAT32;
    if (!f32 && in->type != T_UINT8) return -5;
    if (in->size != n * (f32 ? 4u : 1u)) return -5;
    for (uint32_t y = 0; y < ctx->h; y++)
        for (uint32_t x = 0; x < ctx->w; x++)
            for (uint32_t ch = 0; ch < ctx->c; ch++) {
                uint32_t src = in->fmt == FMT_NCHW ? (ch * ctx->h + y) * ctx->w + x : (y * ctx->w + x) * ctx->c + ch;
                float v = f32 ? ((const float *)in->buf)[src] : (float)((const uint8_t *)in->buf)[src];
                if (!in->pass_through) v = (v - ctx->mean) / ctx->std;
                ctx->pixels[(y * ctx->w + x) * ctx->c + ch] = v;
            }
    ctx->have_input = 1;
    return 0;
}

int rknn_run(rknn_context context, void *extend) {
    fake_ctx *ctx = (fake_ctx *)(uintptr_t)context;
    (void)extend;
    if (!ctx->have_input) return -1;
    for (uint32_t ch = 0; ch < ctx->c; ch++) {
        double sum = 0;
        for (uint32_t p = 0; p < ctx->h * ctx->w; p++) sum += ctx->pixels[p * ctx->c + ch];
        ctx->means[ch] = (float)(sum / (ctx->h * ctx->w));
    }
    ctx->have_run = 1;
    return 0;
}

int rknn_outputs_get(rknn_context context, uint32_t n_outputs, rknn_output outputs[], void *extend) {
    fake_ctx *ctx = (fake_ctx *)(uintptr_t)context;
    (void)extend;
    if (n_outputs != 1 || !ctx->have_run || !outputs[0].want_float) return -5;
    uint32_t bytes = ctx->c * 4u;
    if (outputs[0].is_prealloc) {
        if (outputs[0].size < bytes) return -5;
    } else {
        outputs[0].buf = malloc(bytes);
        outputs[0].size = bytes;
    }
    memcpy(outputs[0].buf, ctx->means, bytes);
    return 0;
}

int rknn_outputs_release(rknn_context context, uint32_t n_outputs, rknn_output outputs[]) {
    (void)context;
    for (uint32_t i = 0; i < n_outputs; i++)
        if (!outputs[i].is_prealloc) { free(outputs[i].buf); outputs[i].buf = NULL; }
    return 0;
}
