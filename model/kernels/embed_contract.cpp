// Fused inference kernel for se_e2_a: embedding nets + contraction T = Σ_pairs R̃ᵀ G.
//
// The pairs are sorted by (group, count, centre) (see model/descriptor.py): each segment
// holds whole centres of one group with the same pair count, so a block of whole centres
// is a contiguous range of pairs. Per block: G = MLP(s) with ATen's GEMMs and one fused
// pass per layer for tanh (as 2σ(2z)−1), the timestep and the residual; then
// T[centre] += R̃_blockᵀ G_block. Blocks run in parallel, each thread accumulating into
// its own T, summed at the end — no block ever materialises more than a cache-sized G.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <math.h>  // C exp(): with -ffast-math gcc maps it to glibc's vector exp (libmvec)

#include <algorithm>
#include <array>
#include <vector>

namespace {

// One hidden layer's activation, in place on z [B, out], reading the layer input x [B, in]:
// z = tanh(z)·idt + residual(x), residual = x (out == in), (x, x) (out == 2 in), or none.
// tanh(z) = 2 / (1 + e^(−2z)) − 1; the exponent is clamped so that e never overflows
// (the kernel is built with -ffast-math, which assumes finite values).
inline double tanh_fast(double z) {
  return 2.0 / (1.0 + exp(std::min(std::max(-2.0 * z, -700.0), 700.0))) - 1.0;
}
inline float tanh_fast(float z) {
  return 2.0f / (1.0f + expf(std::min(std::max(-2.0f * z, -80.0f), 80.0f))) - 1.0f;
}

template <typename scalar_t>
void activate(scalar_t* z, const scalar_t* x, const scalar_t* idt, int64_t rows, int64_t out, int64_t in) {
  const bool same = out == in, dup = out == 2 * in;
  for (int64_t i = 0; i < rows; ++i) {
    scalar_t* zr = z + i * out;
    const scalar_t* xr = x + i * in;
    if (idt != nullptr) {
      for (int64_t j = 0; j < out; ++j) zr[j] = tanh_fast(zr[j]) * idt[j];
    } else {
      for (int64_t j = 0; j < out; ++j) zr[j] = tanh_fast(zr[j]);
    }
    if (same) {
      for (int64_t j = 0; j < out; ++j) zr[j] += xr[j];
    } else if (dup) {
      for (int64_t j = 0; j < in; ++j) { zr[j] += xr[j]; zr[in + j] += xr[j]; }
    }
  }
}

// MLP of one net on a block of scalar inputs s [B, 1] → [B, M1]. layers = [W0, b0, idt0, W1, ...]
// (idt empty when absent); W stored [in, out].
template <typename scalar_t>
torch::Tensor mlp(const torch::Tensor& s, const std::vector<torch::Tensor>& layers) {
  torch::Tensor x = s;
  for (size_t k = 0; k + 2 < layers.size(); k += 3) {
    const torch::Tensor& w = layers[k];
    const torch::Tensor& b = layers[k + 1];
    const torch::Tensor& idt = layers[k + 2];
    torch::Tensor z = x.size(1) == 1 ? torch::addcmul(b, x, w) : torch::addmm(b, x, w);
    activate<scalar_t>(z.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                       idt.numel() ? idt.data_ptr<scalar_t>() : nullptr, z.size(0), z.size(1), x.size(1));
    x = z;
  }
  return x;
}

}  // namespace

// rn [P, 4]; block_centre [n_blocks]; segments [n_seg, 8] int64 rows (net, count, start,
// stop, block_start, block_stop, table, table_first); nets[k] = layers of net k; table ≥ 0:
// the segment's G rows are tables[table][table_index[table][p − table_first]] (a
// precomputed table of distinct embeddings), else computed from s.
torch::Tensor embed_contract(torch::Tensor rn, torch::Tensor block_centre, torch::Tensor segments,
                             std::vector<std::vector<torch::Tensor>> nets, std::vector<torch::Tensor> tables,
                             std::vector<torch::Tensor> table_index, int64_t n_centres, int64_t m1,
                             int64_t block_pairs) {
  TORCH_CHECK(rn.is_contiguous() && rn.dim() == 2 && rn.size(1) == 4, "rn must be contiguous [P, 4]");
  const auto seg = segments.accessor<int64_t, 2>();
  // Work items: (segment, first block, last block) with about block_pairs pairs each.
  std::vector<std::array<int64_t, 3>> items;
  for (int64_t i = 0; i < segments.size(0); ++i) {
    const int64_t count = seg[i][1], b_first = seg[i][4], b_last = seg[i][5];
    const int64_t step = std::max<int64_t>(1, block_pairs / count);
    for (int64_t b0 = b_first; b0 < b_last; b0 += step) items.push_back({i, b0, std::min(b0 + step, b_last)});
  }
  const int64_t n_threads = at::get_num_threads();
  auto t_all = torch::zeros({n_threads, n_centres, 4, m1}, rn.options());
  AT_DISPATCH_FLOATING_TYPES(rn.scalar_type(), "embed_contract", [&] {
    at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t i0, int64_t i1) {
      torch::Tensor t = t_all[at::get_thread_num()];
      for (int64_t it = i0; it < i1; ++it) {
        const auto& [si, b0, b1] = items[it];
        const int64_t net = seg[si][0], count = seg[si][1];
        const int64_t p0 = seg[si][2] + (b0 - seg[si][4]) * count;
        const int64_t p1 = p0 + (b1 - b0) * count;
        torch::Tensor r = rn.slice(0, p0, p1);
        torch::Tensor g;
        const int64_t tab = seg[si][6], first = seg[si][7];
        if (tab >= 0) {
          g = tables[tab].index_select(0, table_index[tab].slice(0, p0 - first, p1 - first));
        } else {
          g = mlp<scalar_t>(r.slice(1, 0, 1).contiguous(), nets[net]);
        }
        torch::Tensor part = torch::bmm(r.view({b1 - b0, count, 4}).transpose(1, 2), g.view({b1 - b0, count, m1}));
        t.index_add_(0, block_centre.slice(0, b0, b1), part);
      }
    });
  });
  return t_all.sum(0);
}

// MLP of net `layers` on s [N, 1] in blocks (for tables of distinct embeddings).
torch::Tensor embed_table(torch::Tensor s, std::vector<torch::Tensor> layers, int64_t block_pairs) {
  const int64_t n = s.size(0);
  const int64_t m1 = layers[layers.size() - 3].size(1);
  auto out = torch::empty({n, m1}, s.options());
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "embed_table", [&] {
    at::parallel_for(0, n, block_pairs, [&](int64_t a, int64_t b) {
      for (int64_t c = a; c < b; c += block_pairs) {
        const int64_t d = std::min(b, c + block_pairs);
        out.slice(0, c, d).copy_(mlp<scalar_t>(s.slice(0, c, d), layers));
      }
    });
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("embed_contract", &embed_contract, "fused se_e2_a embedding + contraction (CPU, inference)");
  m.def("embed_table", &embed_table, "embedding net on a column of scalars (CPU, inference)");
}
