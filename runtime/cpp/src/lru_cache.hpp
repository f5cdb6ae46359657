// A bounded map that forgets its least recently used entry when a new one would pass its capacity: the pipeline's
// cache of unconditional (negative prompt) embeddings, which anyone's negative prompts would otherwise grow
// without end. Not synchronised: the Pipeline holds its lock around every call (pipeline.hpp).
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <optional>
#include <utility>

namespace atrt {

template <typename Key, typename Value>
class LruCache {
 public:
  explicit LruCache(std::size_t capacity) : capacity_(capacity) {}

  // The value of `key`, now the most recently used, or nothing.
  std::optional<Value> get(const Key& key) {
    const auto found = index_.find(key);
    if (found == index_.end()) return std::nullopt;
    entries_.splice(entries_.begin(), entries_, found->second);  // to the front; iterators stay valid
    return found->second->second;
  }

  // Keeps `value` for `key` as the most recently used entry, forgetting the least recently used one when full.
  void put(const Key& key, Value value) {
    if (capacity_ == 0) return;
    const auto found = index_.find(key);
    if (found != index_.end()) {
      found->second->second = std::move(value);
      entries_.splice(entries_.begin(), entries_, found->second);
      return;
    }
    if (entries_.size() == capacity_) {
      index_.erase(entries_.back().first);
      entries_.pop_back();
    }
    entries_.emplace_front(key, std::move(value));
    index_.emplace(key, entries_.begin());
  }

  std::size_t size() const { return entries_.size(); }
  std::size_t capacity() const { return capacity_; }

 private:
  std::size_t capacity_;
  std::list<std::pair<Key, Value>> entries_;  // the most recently used first
  std::map<Key, typename std::list<std::pair<Key, Value>>::iterator> index_;
};

}  // namespace atrt
