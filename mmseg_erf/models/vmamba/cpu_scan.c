/*
 * Selective scan (S6) on the CPU: the sequential recurrence, compiled.
 *
 * Built by cpu_kernel.py at first use (cc -O3, no dependency beyond libm) and
 * called through ctypes, which releases the GIL: the Python side runs one call
 * per worker thread, each on its own range of work items. Compiled twice, with
 * SCAN_REAL float and double.
 *
 * Layout (token-major, contiguous): u, dt (batch, L, K*D); At (N, K*D), the
 * transposed state matrix; B, C (batch, L, K, N); D (K*D) or NULL. dt is the
 * step size softplus(delta + bias) (the caller computes it; the backward returns
 * the gradient of delta): dt >= 0 and A <= 0, so every decay exp(dt A) lies in (0, 1].
 *
 * A work item is (direction k, slice s of its D channels: a multiple of 8, at
 * most 64 as the caller picks them); items touch disjoint channels, so dA and
 * dD need no synchronisation, and dB, dC (shared by the channels of a
 * direction) are written to the slice's own partial buffer (S, batch, L, K, N),
 * summed by the caller. An item walks the positions with the states of all its
 * channels (N x width, in L1) and the channels innermost: every position reads
 * one contiguous run of u, dt and y and one row of B and C, and the loops over
 * channels vectorise. The state entering every CHUNK positions is saved; the
 * backward recomputes a chunk's states and decays from it into a small buffer
 * (CHUNK x N x width), then walks the chunk backwards.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef SCAN_REAL
#define SCAN_REAL float
#endif
typedef SCAN_REAL real;

#define CHUNK 32  /* positions between saved states */
#define MAX_STATE 64

/* exp(x) for x <= 0: libm's exp is not vectorised without -ffast-math, so float
 * uses the Cephes polynomial on x = k ln2 + r (about 1 ulp); x is clamped where
 * exp(x) would leave the normal range (its value there is below 2e-38 either way). */
static inline real decay_exp(real x) {
#ifdef SCAN_DOUBLE
    return exp(x);
#else
    x = x < -87.0f ? -87.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick: vectorises where floorf may not */
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)k + 127) << 23;
    return p * scale.f;
#endif
}

/* d softplus(z) / dz = sigmoid(z) = -expm1(-dt) with dt = softplus(z), in full relative
 * precision for the small step sizes VMamba starts from (1 - exp(-dt) would cancel);
 * exactly 1 above softplus's threshold 20, where softplus is the identity. */
static inline real softplus_slope(real dt) {
#ifdef SCAN_DOUBLE
    return dt > 20 ? 1.0 : -expm1(-dt);
#else
    const float x = -dt;
    /* |x| < 0.5: expm1's series to x^10 / 10! (truncation below 1e-9 relative) */
    float p = 1.0f / 3628800.0f;
    p = p * x + 1.0f / 362880.0f;
    p = p * x + 1.0f / 40320.0f;
    p = p * x + 1.0f / 5040.0f;
    p = p * x + 1.0f / 720.0f;
    p = p * x + 1.0f / 120.0f;
    p = p * x + 1.0f / 24.0f;
    p = p * x + 1.0f / 6.0f;
    p = p * x + 0.5f;
    p = p * x + 1.0f;
    const float series = -p * x, direct = 1.0f - decay_exp(x);  /* direct: exp(x) < 0.61 */
    return dt > 20.0f ? 1.0f : (x > -0.5f ? series : direct);
#endif
}

typedef struct {
    const real *u, *dt, *At, *B, *C, *D;
    int64_t batch, length, groups, dim, nstate, slices;
} Scan;

static inline int64_t n_chunks(const Scan *s) { return (s->length + CHUNK - 1) / CHUNK; }

/* Scratch of one item: the states and decay rates of its channels, and per-position rows. */
typedef struct {
    real *h, *a_n, *dt, *dtu, *acc;
} Rows;

/* Forward of the `width` channels from c0 (one item) of batch b; h: (N, width). */
static void forward_item(const Scan *s, int64_t b, int64_t c0, int64_t width, const Rows *r,
                         real *y, real *saved) {
    const int64_t kd = s->groups * s->dim, n_state = s->nstate, k = c0 / s->dim;
    real *h = r->h, *a_n = r->a_n, *dt = r->dt, *dtu = r->dtu, *acc = r->acc;
    memset(h, 0, sizeof(real) * n_state * width);
    for (int64_t n = 0; n < n_state; n++)
        for (int64_t i = 0; i < width; i++) a_n[n * width + i] = s->At[n * kd + c0 + i];
    for (int64_t t = 0; t < s->length; t++) {
        if (t % CHUNK == 0) {  /* the state entering this chunk */
            real *dst = saved + ((b * n_chunks(s) + t / CHUNK) * n_state) * kd + c0;
            for (int64_t n = 0; n < n_state; n++)
                memcpy(dst + n * kd, h + n * width, sizeof(real) * width);
        }
        const int64_t row = (b * s->length + t) * kd + c0;
        const real *bt = s->B + ((b * s->length + t) * s->groups + k) * n_state;
        const real *ct = s->C + ((b * s->length + t) * s->groups + k) * n_state;
#pragma omp simd
        for (int64_t i = 0; i < width; i++) {
            dt[i] = s->dt[row + i];
            dtu[i] = dt[i] * s->u[row + i];
            acc[i] = s->D ? s->D[c0 + i] * s->u[row + i] : 0;
        }
        for (int64_t n = 0; n < n_state; n++) {
            const real bn = bt[n], cn = ct[n];
            real *hn = h + n * width;
            const real *an = a_n + n * width;
#pragma omp simd
            for (int64_t i = 0; i < width; i++) {
                hn[i] = decay_exp(dt[i] * an[i]) * hn[i] + dtu[i] * bn;
                acc[i] += cn * hn[i];
            }
        }
        memcpy(y + row, acc, sizeof(real) * width);
    }
}

typedef struct {
    real *du, *ddelta, *dA, *dD, *dB, *dC;  /* dA (K*D, N), dD may be NULL */
} Grads;

/* Backward of the `width` channels from c0 of batch b; dB, dC are this slice's partials.
 * hbuf, abuf: (CHUNK, N, width); carry, dA: (N, width); the rows of r: (width). */
static void backward_item(const Scan *s, int64_t b, int64_t c0, int64_t width, const Rows *r,
                          const real *gy, const real *saved, const Grads *g, real *dB, real *dC,
                          real *hbuf, real *abuf, real *carry, real *dA, real *dD) {
    const int64_t kd = s->groups * s->dim, n_state = s->nstate, k = c0 / s->dim;
    const int64_t stride = n_state * width;  /* one position of hbuf / abuf */
    const int want_dA = g->dA != NULL;  /* not for an ERF: the parameters are frozen */
    real *a_n = r->a_n, *dt = r->dt, *dtu = r->dtu, *ddtu = r->acc, *entering = r->h;
    real *u = r->dt + width, *dy = r->dt + 2 * width, *ddt = r->dt + 3 * width;
    memset(carry, 0, sizeof(real) * stride);  /* a[t + 1] * adjoint[t + 1] */
    memset(dA, 0, sizeof(real) * stride);
    memset(dD, 0, sizeof(real) * width);
    for (int64_t n = 0; n < n_state; n++)
        for (int64_t i = 0; i < width; i++) a_n[n * width + i] = s->At[n * kd + c0 + i];
    for (int64_t j = n_chunks(s) - 1; j >= 0; j--) {
        const int64_t t0 = j * CHUNK, t1 = t0 + CHUNK < s->length ? t0 + CHUNK : s->length;
        const real *src = saved + ((b * n_chunks(s) + j) * n_state) * kd + c0;
        for (int64_t n = 0; n < n_state; n++)
            memcpy(entering + n * width, src + n * kd, sizeof(real) * width);
        /* the chunk's states and decays, recomputed from the state entering it */
        for (int64_t t = t0; t < t1; t++) {
            const int64_t row = (b * s->length + t) * kd + c0;
            const real *bt = s->B + ((b * s->length + t) * s->groups + k) * n_state;
            real *hp = hbuf + (t - t0) * stride, *ap = abuf + (t - t0) * stride;
            const real *prev = t > t0 ? hp - stride : entering;
#pragma omp simd
            for (int64_t i = 0; i < width; i++) {
                dt[i] = s->dt[row + i];
                dtu[i] = dt[i] * s->u[row + i];
            }
            for (int64_t n = 0; n < n_state; n++) {
                const real bn = bt[n];
                const real *an = a_n + n * width, *pn = prev + n * width;
                real *hn = hp + n * width, *dn = ap + n * width;
#pragma omp simd
                for (int64_t i = 0; i < width; i++) {
                    dn[i] = decay_exp(dt[i] * an[i]);
                    hn[i] = dn[i] * pn[i] + dtu[i] * bn;
                }
            }
        }
        for (int64_t t = t1 - 1; t >= t0; t--) {
            const int64_t row = (b * s->length + t) * kd + c0;
            const int64_t bc = ((b * s->length + t) * s->groups + k) * n_state;
            const real *bt = s->B + bc, *ct = s->C + bc;
            const real *hp = hbuf + (t - t0) * stride, *ap = abuf + (t - t0) * stride;
            const real *prev = t > t0 ? hp - stride : entering;
#pragma omp simd
            for (int64_t i = 0; i < width; i++) {
                dt[i] = s->dt[row + i];
                u[i] = s->u[row + i];
                dy[i] = gy[row + i];
                dtu[i] = dt[i] * u[i];
                ddtu[i] = 0;
                ddt[i] = 0;
            }
            for (int64_t n = 0; n < n_state; n++) {
                const real bn = bt[n], cn = ct[n];
                const real *an = a_n + n * width, *pn = prev + n * width;
                const real *hn = hp + n * width, *dn = ap + n * width;
                real *cy = carry + n * width, *da = dA + n * width;
                real db = 0, dc = 0;
#pragma omp simd reduction(+ : db, dc)
                for (int64_t i = 0; i < width; i++) {
                    const real adj = cy[i] + cn * dy[i];  /* dL/dh[t] in full */
                    const real dla = adj * dn[i] * pn[i];  /* dL/d(dt A) */
                    dc += dy[i] * hn[i];
                    db += adj * dtu[i];
                    ddtu[i] += adj * bn;
                    ddt[i] += dla * an[i];
                    if (want_dA) da[i] += dla * dt[i];
                    cy[i] = dn[i] * adj;
                }
                dB[bc + n] += db;
                dC[bc + n] += dc;
            }
#pragma omp simd
            for (int64_t i = 0; i < width; i++) {
                g->du[row + i] = ddtu[i] * dt[i] + (s->D ? s->D[c0 + i] * dy[i] : 0);
                /* dL/d delta: through dt = softplus(delta + bias) */
                g->ddelta[row + i] = (ddt[i] + ddtu[i] * u[i]) * softplus_slope(dt[i]);
                dD[i] += dy[i] * u[i];
            }
        }
    }
    if (want_dA)
        for (int64_t n = 0; n < n_state; n++)
            for (int64_t i = 0; i < width; i++) g->dA[(c0 + i) * n_state + n] += dA[n * width + i];
    if (g->dD)
        for (int64_t i = 0; i < width; i++) g->dD[c0 + i] += dD[i];
}

/* The first channel of item (k, slice), a contiguous run of dim / slices channels. */
static int64_t item_start(const Scan *s, int64_t item) {
    const int64_t k = item / s->slices, slice = item % s->slices;
    return k * s->dim + slice * (s->dim / s->slices);
}

/* Scratch for one item of `width` channels: two (N, width) blocks and six rows. */
static real *rows_alloc(Rows *r, int64_t nstate, int64_t width) {
    real *block = malloc(sizeof(real) * (2 * nstate + 6) * width);
    if (block) {
        r->h = block;
        r->a_n = block + nstate * width;
        r->acc = r->a_n + nstate * width;
        r->dtu = r->acc + width;
        r->dt = r->dtu + width;  /* and three more rows after it (backward) */
    }
    return block;
}

int scan_forward(const real *u, const real *dt, const real *At, const real *B, const real *C,
                 const real *D, int64_t batch, int64_t length, int64_t groups, int64_t dim,
                 int64_t nstate, int64_t slices, real *y, real *saved,
                 int64_t item_begin, int64_t item_end) {
    if (nstate > MAX_STATE || dim % slices || (dim / slices) % 8) return 1;
    const Scan s = {u, dt, At, B, C, D, batch, length, groups, dim, nstate, slices};
    const int64_t width = dim / slices;
    Rows r;
    real *scratch = rows_alloc(&r, nstate, width);
    if (!scratch) return 2;
    for (int64_t item = item_begin; item < item_end; item++)
        for (int64_t b = 0; b < batch; b++)
            forward_item(&s, b, item_start(&s, item), width, &r, y, saved);
    free(scratch);
    return 0;
}

int scan_backward(const real *u, const real *dt, const real *At, const real *B, const real *C,
                  const real *D, int64_t batch, int64_t length, int64_t groups, int64_t dim,
                  int64_t nstate, int64_t slices, const real *gy, const real *saved,
                  real *du, real *ddelta, real *dA, real *dD, real *dB_parts, real *dC_parts,
                  int64_t item_begin, int64_t item_end) {
    if (nstate > MAX_STATE || dim % slices || (dim / slices) % 8) return 1;
    const Scan s = {u, dt, At, B, C, D, batch, length, groups, dim, nstate, slices};
    const Grads g = {du, ddelta, dA, dD, dB_parts, dC_parts};
    const int64_t part = batch * length * groups * nstate, width = dim / slices;
    const int64_t states = nstate * width;
    Rows r;
    real *scratch = rows_alloc(&r, nstate, width);
    real *work = malloc(sizeof(real) * (2 * CHUNK * states + 2 * states + width));
    if (!scratch || !work) {
        free(scratch);
        free(work);
        return 2;
    }
    real *hbuf = work, *abuf = work + CHUNK * states, *carry = abuf + CHUNK * states;
    real *dA_item = carry + states, *dD_item = dA_item + states;
    for (int64_t item = item_begin; item < item_end; item++) {
        const int64_t begin = item_start(&s, item);
        real *dB = dB_parts + (item % slices) * part, *dC = dC_parts + (item % slices) * part;
        for (int64_t b = 0; b < batch; b++)
            backward_item(&s, b, begin, width, &r, gy, saved, &g, dB, dC, hbuf, abuf, carry,
                          dA_item, dD_item);
    }
    free(scratch);
    free(work);
    return 0;
}
