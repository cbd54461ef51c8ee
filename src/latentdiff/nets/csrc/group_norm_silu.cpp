// Fused GroupNorm (+ SiLU) for float32 and bfloat16 channels-last CPU tensors, forward and backward.
//
// GroupNorm (Wu & He 2018, eq. 1-3) with a per-channel or per-sample affine map, optionally followed by
// SiLU (Elfwing et al. 2018). A channels-last (B, C, H, W) tensor is, per sample, an (H·W, C) matrix with
// channels contiguous, so every loop below runs over pixels outside and channels inside, where the
// compiler vectorises it. One sample is one task for ATen's thread pool; its data (H·W·C floats) stays in
// the core's cache between the passes:
//   forward : per-channel sums, centred per-channel squares, then y = act((x − mean)·scale + bias)  (3)
//   backward: g = dy·act'(z) with its per-channel sums Σg, Σg·(x − mean), then dx from g           (2)
// instead of the ~10 separate passes (and buffers) of the same maths written with PyTorch operators.
// Sums run in float over blocks of pixels and in double across blocks, over values centred first, so a
// mean far larger than the spread cancels nothing; SiLU's exponential is a polynomial the compiler can
// vectorise (a call to expf would not be). bfloat16 activations (autocast) are read and written as
// bfloat16 and computed in float; the affine parameters are float32.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlock = 64;  // pixels summed in float before adding to the double totals

// e^x for float x, clamped to [-87, 88]: n = round(x·log2 e) by the 1.5·2^23 shifter, r = x − n·ln 2
// in two parts (Cody & Waite 1980), e^r by its degree-6 Taylor polynomial (|r| ≤ ln2/2, error < 2 ulp),
// times 2^n built in the exponent bits.
__attribute__((always_inline)) inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float shifter = 12582912.0f;
  const float n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(float));
  return p * two_n;
}

__attribute__((always_inline)) inline float sigmoid(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// activations: float, or bfloat16 as its 16 bits (the upper half of a float32)
using Bf16Bits = uint16_t;

inline float to_float(float v) { return v; }

inline float to_float(Bf16Bits v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(float));
  return f;
}

inline void store(float v, float* out) { *out = v; }

// round to nearest even; NaN stays NaN
inline void store(float v, Bf16Bits* out) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(float));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  *out = v != v ? static_cast<Bf16Bits>(0x7FC0) : static_cast<Bf16Bits>(rounded);
}

struct Shape {
  int64_t batch, channels, pixels, groups, per_group;
};

Shape shape_of(const at::Tensor& x, int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() &&
                  (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "group_norm_silu: expected a float32 or bfloat16 channels-last CPU tensor (B, C, H, W), got ",
              x.sizes(), " ", x.scalar_type());
  const int64_t c = x.size(1);
  TORCH_CHECK(groups > 0 && c % groups == 0, "group_norm_silu: groups=", groups,
              " must divide the channels (", c, ")");
  return {x.size(0), c, x.size(2) * x.size(3), groups, c / groups};
}

void check_affine(const at::Tensor& p, const Shape& s, const char* name) {
  const bool shared = p.dim() == 1 && p.size(0) == s.channels;
  const bool per_sample = p.dim() == 2 && p.size(0) == s.batch && p.size(1) == s.channels;
  TORCH_CHECK((shared || per_sample) && p.scalar_type() == at::kFloat && p.is_contiguous(),
              "group_norm_silu: ", name, " must be a contiguous float32 tensor of shape (C,) or (B, C), got ",
              p.sizes());
}

// the affine parameters of sample b: (C,) shared by all samples or row b of (B, C)
inline const float* row_of(const at::Tensor& p, int64_t b) {
  return p.data_ptr<float>() + (p.dim() == 2 ? b * p.size(1) : 0);
}

// Group mean and 1/std of one sample: per-channel sums of x − x[pixel 0] and of squares about the channel
// mean (so a mean far larger than the spread cancels nothing), merged per group with
// var_g = mean_c(var_c) + var_c(mean_c), all channels of a group having the same pixel count.
template <typename T>
void group_stats(const T* x, const Shape& s, double eps, float* mean_g, float* rstd_g) {
  const int64_t C = s.channels;
  std::vector<double> sum(C, 0.0), sq(C, 0.0);
  std::vector<float> acc(C), mean_c(C);
  std::vector<float> first(C);
  float* __restrict a = acc.data();
  float* __restrict x0 = first.data();
  for (int64_t c = 0; c < C; ++c) x0[c] = to_float(x[c]);
  for (int64_t i0 = 0; i0 < s.pixels; i0 += kBlock) {
    const int64_t i1 = std::min(s.pixels, i0 + kBlock);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t i = i0; i < i1; ++i) {
      const T* __restrict xi = x + i * C;
      for (int64_t c = 0; c < C; ++c) a[c] += to_float(xi[c]) - x0[c];
    }
    for (int64_t c = 0; c < C; ++c) sum[c] += a[c];
  }
  for (int64_t c = 0; c < C; ++c) {
    sum[c] += static_cast<double>(x0[c]) * s.pixels;
    mean_c[c] = static_cast<float>(sum[c] / s.pixels);
  }
  const float* __restrict m = mean_c.data();
  for (int64_t i0 = 0; i0 < s.pixels; i0 += kBlock) {
    const int64_t i1 = std::min(s.pixels, i0 + kBlock);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t i = i0; i < i1; ++i) {
      const T* __restrict xi = x + i * C;
      for (int64_t c = 0; c < C; ++c) {
        const float v = to_float(xi[c]) - m[c];
        a[c] += v * v;
      }
    }
    for (int64_t c = 0; c < C; ++c) sq[c] += a[c];
  }
  for (int64_t g = 0; g < s.groups; ++g) {
    double mean = 0.0, var = 0.0;
    for (int64_t k = 0; k < s.per_group; ++k) mean += sum[g * s.per_group + k];
    mean /= static_cast<double>(s.pixels * s.per_group);
    for (int64_t k = 0; k < s.per_group; ++k) {
      const int64_t c = g * s.per_group + k;
      const double dm = sum[c] / s.pixels - mean;
      var += sq[c] / s.pixels + dm * dm;
    }
    var /= static_cast<double>(s.per_group);
    mean_g[g] = static_cast<float>(mean);
    rstd_g[g] = static_cast<float>(1.0 / std::sqrt(var + eps));
  }
}

// GroupNorm(x)·w + b = (x − centre)·scale + b per channel of one sample; subtracting the mean first keeps
// the precision that x·scale + (b − mean·scale) loses when the mean is large against the spread
void centre_scale(const Shape& s, const float* mean_g, const float* rstd_g, const float* w, float* centre,
                  float* scale) {
  for (int64_t c = 0; c < s.channels; ++c) {
    const int64_t g = c / s.per_group;
    centre[c] = mean_g[g];
    scale[c] = rstd_g[g] * w[c];
  }
}

template <typename T>
void forward_impl(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, const Shape& s,
                  double eps, bool silu, at::Tensor& y, at::Tensor& mean, at::Tensor& rstd) {
  const int64_t C = s.channels, stride = s.pixels * C;
  const T* xp = reinterpret_cast<const T*>(x.data_ptr());
  T* yp = reinterpret_cast<T*>(y.data_ptr());
  at::parallel_for(0, s.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> centre(C), scale(C);
    for (int64_t b = begin; b < end; ++b) {
      const T* xb = xp + b * stride;
      T* yb = yp + b * stride;
      float* mg = mean.data_ptr<float>() + b * s.groups;
      float* rg = rstd.data_ptr<float>() + b * s.groups;
      group_stats(xb, s, eps, mg, rg);
      centre_scale(s, mg, rg, row_of(weight, b), centre.data(), scale.data());
      const float* __restrict ce = centre.data();
      const float* __restrict sc = scale.data();
      const float* __restrict sh = row_of(bias, b);
      for (int64_t i = 0; i < s.pixels; ++i) {
        const T* __restrict xi = xb + i * C;
        T* __restrict yi = yb + i * C;
        if (silu) {
          for (int64_t c = 0; c < C; ++c) {
            const float z = (to_float(xi[c]) - ce[c]) * sc[c] + sh[c];
            store(z * sigmoid(z), yi + c);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) store((to_float(xi[c]) - ce[c]) * sc[c] + sh[c], yi + c);
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& mean, const at::Tensor& rstd,
                   const at::Tensor& weight, const at::Tensor& bias, const Shape& s, bool silu, at::Tensor& dx,
                   at::Tensor& dweight, at::Tensor& dbias) {
  const int64_t C = s.channels, stride = s.pixels * C;
  const double count = static_cast<double>(s.pixels * s.per_group);
  const T* xp = reinterpret_cast<const T*>(x.data_ptr());
  const T* gp = reinterpret_cast<const T*>(dy.data_ptr());
  T* dxp = reinterpret_cast<T*>(dx.data_ptr());
  at::parallel_for(0, s.batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> sum_g(C), sum_gx(C);
    std::vector<float> centre(C), scale(C), acc_g(C), acc_gx(C), coef_g(C), coef_x(C), coef_0(C);
    std::vector<float> grad_out(stride);  // g of one sample, in float between the two passes
    for (int64_t b = begin; b < end; ++b) {
      const T* xb = xp + b * stride;
      const T* gb = gp + b * stride;
      T* db = dxp + b * stride;
      float* gbuf = grad_out.data();
      const float* mg = mean.data_ptr<float>() + b * s.groups;
      const float* rg = rstd.data_ptr<float>() + b * s.groups;
      const float* w = row_of(weight, b);
      centre_scale(s, mg, rg, w, centre.data(), scale.data());
      const float* __restrict ce = centre.data();
      const float* __restrict sc = scale.data();
      const float* __restrict sh = row_of(bias, b);
      float* __restrict ag = acc_g.data();
      float* __restrict agx = acc_gx.data();
      std::fill(sum_g.begin(), sum_g.end(), 0.0);
      std::fill(sum_gx.begin(), sum_gx.end(), 0.0);
      // pass 1: g (through SiLU: dy·σ(z)·(1 + z·(1 − σ(z))) with z recomputed) and its sums Σg and
      // Σg·(x − mean) per channel
      for (int64_t i0 = 0; i0 < s.pixels; i0 += kBlock) {
        const int64_t i1 = std::min(s.pixels, i0 + kBlock);
        std::fill(acc_g.begin(), acc_g.end(), 0.0f);
        std::fill(acc_gx.begin(), acc_gx.end(), 0.0f);
        for (int64_t i = i0; i < i1; ++i) {
          const T* __restrict xi = xb + i * C;
          const T* __restrict gi = gb + i * C;
          float* __restrict g = gbuf + i * C;
          if (silu) {
            for (int64_t c = 0; c < C; ++c) {
              const float z = (to_float(xi[c]) - ce[c]) * sc[c] + sh[c];
              const float sig = sigmoid(z);
              g[c] = to_float(gi[c]) * sig * (1.0f + z * (1.0f - sig));
            }
          } else {
            for (int64_t c = 0; c < C; ++c) g[c] = to_float(gi[c]);
          }
          // a loop of its own: GCC does not vectorise the sums together with the sigmoid
          for (int64_t c = 0; c < C; ++c) {
            ag[c] += g[c];
            agx[c] += g[c] * (to_float(xi[c]) - ce[c]);
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          sum_g[c] += ag[c];
          sum_gx[c] += agx[c];
        }
      }
      float* dw = dweight.data_ptr<float>() + b * C;
      float* dbb = dbias.data_ptr<float>() + b * C;
      for (int64_t grp = 0; grp < s.groups; ++grp) {
        const double r = rg[grp];
        double gamma_g = 0.0, gamma_g_xhat = 0.0;
        for (int64_t k = 0; k < s.per_group; ++k) {
          const int64_t c = grp * s.per_group + k;
          const double g_xhat = r * sum_gx[c];  // Σ g·x̂ of channel c
          dw[c] = static_cast<float>(g_xhat);
          dbb[c] = static_cast<float>(sum_g[c]);
          gamma_g += w[c] * sum_g[c];
          gamma_g_xhat += w[c] * g_xhat;
        }
        const double cx = -r * r * gamma_g_xhat / count;  // −x̂·(r/M)·Σγ·Σg·x̂ = cx·(x − mean)
        const double c0 = -r * gamma_g / count;
        for (int64_t k = 0; k < s.per_group; ++k) {
          const int64_t c = grp * s.per_group + k;
          coef_g[c] = static_cast<float>(r * w[c]);
          coef_x[c] = static_cast<float>(cx);
          coef_0[c] = static_cast<float>(c0);
        }
      }
      // pass 2: dx = r·γ·g + cx·(x − mean) + c0
      const float* __restrict kg = coef_g.data();
      const float* __restrict kx = coef_x.data();
      const float* __restrict k0 = coef_0.data();
      for (int64_t i = 0; i < s.pixels; ++i) {
        const T* __restrict xi = xb + i * C;
        const float* __restrict g = gbuf + i * C;
        T* __restrict di = db + i * C;
        for (int64_t c = 0; c < C; ++c) store(kg[c] * g[c] + kx[c] * (to_float(xi[c]) - ce[c]) + k0[c], di + c);
      }
    }
  });
}

}  // namespace

// y = act(GroupNorm(x)·weight + bias) in x's dtype; returns (y, mean, rstd) with float32 mean, rstd of
// shape (B, groups). weight, bias: float32 (C,) or (B, C).
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                int64_t groups, double eps, bool silu) {
  const Shape s = shape_of(x, groups);
  check_affine(weight, s, "weight");
  check_affine(bias, s, "bias");
  auto y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  auto stats = x.options().dtype(at::kFloat);
  auto mean = at::empty({s.batch, s.groups}, stats);
  auto rstd = at::empty({s.batch, s.groups}, stats);
  if (x.scalar_type() == at::kFloat) {
    forward_impl<float>(x, weight, bias, s, eps, silu, y, mean, rstd);
  } else {
    forward_impl<Bf16Bits>(x, weight, bias, s, eps, silu, y, mean, rstd);
  }
  return {y, mean, rstd};
}

// Gradients of forward() for upstream gradient dy: (dx in x's dtype, dweight, dbias), the last two float32
// per sample (B, C) (the caller sums them over the batch for a shared affine). With g the gradient at the
// GroupNorm output, M the pixels·channels of a group and r its 1/std (Wu & He 2018, backward of eq. 1-3):
//   dx = r·γ·g − (r/M)·Σ_group γ·Σg − x̂·(r/M)·Σ_group γ·Σg·x̂,   dγ = Σg·x̂,   dβ = Σg.
std::vector<at::Tensor> backward(const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& mean,
                                 const at::Tensor& rstd, const at::Tensor& weight, const at::Tensor& bias,
                                 int64_t groups, bool silu) {
  const Shape s = shape_of(x, groups);
  check_affine(weight, s, "weight");
  check_affine(bias, s, "bias");
  TORCH_CHECK(dy_in.sizes() == x.sizes(), "group_norm_silu: gradient shape ", dy_in.sizes(),
              " != input shape ", x.sizes());
  const auto dy = dy_in.to(x.scalar_type()).contiguous(at::MemoryFormat::ChannelsLast);
  auto dx = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  auto stats = x.options().dtype(at::kFloat);
  auto dweight = at::empty({s.batch, s.channels}, stats);
  auto dbias = at::empty({s.batch, s.channels}, stats);
  if (x.scalar_type() == at::kFloat) {
    backward_impl<float>(dy, x, mean, rstd, weight, bias, s, silu, dx, dweight, dbias);
  } else {
    backward_impl<Bf16Bits>(dy, x, mean, rstd, weight, bias, s, silu, dx, dweight, dbias);
  }
  return {dx, dweight, dbias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "latentdiff: fused GroupNorm (+ SiLU) for float32 / bfloat16 channels-last CPU tensors";
  m.def("forward", &forward, "y, mean, rstd = forward(x, weight, bias, groups, eps, silu)");
  m.def("backward", &backward, "dx, dweight, dbias = backward(dy, x, mean, rstd, weight, bias, groups, silu)");
}
