// Growable RRT node store: points, parents, and exact nearest-node queries.
// Nodes are append-only. Storage doubles when full (amortised O(1) append); the point
// buffer is replaced, never resized, so a view of the old buffer stays valid.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "nearest.hpp"

namespace egbas {

class Tree {
 public:
  explicit Tree(int64_t dim, int64_t capacity = 1024) : dim_(dim) {
    if (dim <= 0) throw std::invalid_argument("dim must be positive, got " + std::to_string(dim));
    if (capacity <= 0) throw std::invalid_argument("capacity must be positive, got " + std::to_string(capacity));
    reserve(capacity);
  }

  int64_t dim() const { return dim_; }
  int64_t size() const { return size_; }
  int64_t capacity() const { return capacity_; }
  const float* points() const { return points_->data(); }     // (size, dim)
  const int64_t* parents() const { return parents_->data(); }  // (size,)
  // Shared ownership of the current buffers, for zero-copy views that outlive a regrowth.
  std::shared_ptr<const std::vector<float>> points_buffer() const { return points_; }
  std::shared_ptr<const std::vector<int64_t>> parents_buffer() const { return parents_; }

  // Appends k nodes (pts: (k, dim)); parents[i] is -1 (a root) or an earlier node
  // (< size() + i). Checks everything before changing anything. Writes the new indices.
  void add(const float* pts, const int64_t* parents, int64_t k, int64_t* new_idx) {
    for (int64_t i = 0; i < k; ++i)
      if (parents[i] < -1 || parents[i] >= size_ + i)
        throw std::invalid_argument("parents[" + std::to_string(i) + "] = " + std::to_string(parents[i]) +
                                    " must be -1 or the index of an earlier node (< " + std::to_string(size_ + i) +
                                    ")");
    if (k == 0) return;
    // Centred copies and norms into scratch first, so that a bad row changes nothing.
    const float* centre = size_ ? centre_.data() : pts;  // the first node is the reference point
    std::vector<float> centred(size_t(k * dim_)), norms(k);
    detail::centre_rows(pts, 0, k, dim_, centre, centred.data(), norms.data(), "points", 0);
    if (size_ == 0) centre_.assign(pts, pts + dim_);
    const auto keep_alive = points_;  // pts may point into the current buffer, which regrowth replaces
    if (size_ + k > capacity_) reserve(std::max(2 * capacity_, size_ + k));
    std::copy(pts, pts + k * dim_, points_->data() + size_ * dim_);
    std::copy(parents, parents + k, parents_->data() + size_);
    centred_.insert(centred_.end(), centred.begin(), centred.end());
    norms_.insert(norms_.end(), norms.begin(), norms.end());
    for (int64_t i = 0; i < k; ++i) new_idx[i] = size_ + i;
    size_ += k;
  }

  // Exact nearest node of each query (B, dim): see egbas::nearest.
  void nearest(const float* queries, int64_t B, int64_t* idx, float* dist2) const {
    if (size_ == 0) throw std::invalid_argument("the tree is empty: add a node before calling nearest");
    detail::nearest_centred(centred_.data(), dim_, norms_.data(), points_->data(), dim_, size_, dim_,
                            centre_.data(), queries, B, idx, dist2);
  }

 private:
  void reserve(int64_t capacity) {
    auto points = std::make_shared<std::vector<float>>(size_t(capacity * dim_));
    auto parents = std::make_shared<std::vector<int64_t>>(size_t(capacity));
    if (points_) {
      std::copy(points_->data(), points_->data() + size_ * dim_, points->data());
      std::copy(parents_->data(), parents_->data() + size_, parents->data());
    }
    points_ = std::move(points);
    parents_ = std::move(parents);
    centred_.reserve(size_t(capacity * dim_));
    norms_.reserve(size_t(capacity));
    capacity_ = capacity;
  }

  int64_t dim_, size_ = 0, capacity_ = 0;
  std::shared_ptr<std::vector<float>> points_;
  std::shared_ptr<std::vector<int64_t>> parents_;
  std::vector<float> centred_, norms_, centre_;  // kernel copy about centre_ (the first node)
};

}  // namespace egbas
