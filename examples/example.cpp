// Pure C++ use of the header-only core (no Python): grow a small RRT toward random
// targets and check the exact nearest-node search against brute force in double.
// Built and run by ctest with -DEGBAS_BUILD_EXAMPLES=ON.
#include <cmath>
#include <cstdio>
#include <vector>

#include "egbas/egbas.hpp"

int main() {
  const int64_t d = 16, batch = 64, rounds = 20;
  std::vector<float> root(d, 10.0f);  // a query far from the origin, as in E-GBAS
  egbas::Tree tree(d, 8);
  int64_t root_idx, root_parent = -1;
  tree.add(root.data(), &root_parent, 1, &root_idx);

  std::vector<float> targets(batch * d), steered(batch * d), dist2(batch);
  std::vector<int64_t> nearest(batch), added(batch);
  for (int64_t r = 0; r < rounds; ++r) {
    egbas::random_uniform_ball(root.data(), d, 0.5, batch, /*seed=*/7, /*offset=*/r * batch, targets.data());
    tree.nearest(targets.data(), batch, nearest.data(), dist2.data());
    std::vector<float> origins(batch * d);
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t k = 0; k < d; ++k) origins[b * d + k] = tree.points()[nearest[b] * d + k];
    egbas::steer(origins.data(), targets.data(), batch, d, 0.01, steered.data());
    tree.add(steered.data(), nearest.data(), batch, added.data());
  }

  // Brute force in double over the final tree (ties -> lowest index).
  egbas::random_uniform_ball(root.data(), d, 0.5, batch, 8, 0, targets.data());
  tree.nearest(targets.data(), batch, nearest.data(), dist2.data());
  int wrong = 0;
  for (int64_t b = 0; b < batch; ++b) {
    double best = INFINITY;
    int64_t best_i = -1;
    for (int64_t i = 0; i < tree.size(); ++i) {
      double s = 0;
      for (int64_t k = 0; k < d; ++k) {
        double diff = double(tree.points()[i * d + k]) - double(targets[b * d + k]);
        s += diff * diff;
      }
      if (s < best) best = s, best_i = i;
    }
    wrong += best_i != nearest[b];
  }

  // Sign bits of the steered batch against the root's, all units selected.
  std::vector<uint64_t> bits(batch * egbas::words_for(d)), ref(egbas::words_for(d)), mask(ref.size(), ~0ull);
  std::vector<int32_t> mismatches(batch);
  egbas::pack_signs(steered.data(), batch, d, 10.0f, bits.data());
  egbas::pack_signs(root.data(), 1, d, 10.0f, ref.data());
  egbas::mismatch_count(bits.data(), batch, egbas::words_for(d), ref.data(), mask.data(), mismatches.data());

  std::printf("tree: %lld nodes, isa %s, nearest mismatches vs brute force: %d, mismatch_count[0] = %d\n",
              (long long)tree.size(), egbas::isa_name(egbas::active_isa()), wrong, mismatches[0]);
  return wrong == 0 && tree.size() == 1 + rounds * batch ? 0 : 1;
}
