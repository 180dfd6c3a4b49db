// thread_pool.hpp -- a small persistent pool for the CPU core's parallel parts.
//
// run(n, fn) calls fn(0) .. fn(n-1), the caller taking parts too, and returns when all are
// done and no worker is still inside the job (so no worker can take a part of the next one).
// Parts are handed out by an atomic counter, so a worker that wakes late (or never, as in a
// forked child) costs nothing: the caller finishes the job alone. One job at a time: a
// second caller that finds the pool busy runs its parts itself. Workers are detached and
// never joined (the pool lives until the process exits), so neither interpreter shutdown nor
// fork can block on them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace lstm_cpu {

class ThreadPool {
  public:
    void run(int n, const std::function<void(int)>& fn) {
        if (n <= 1) {
            for (int i = 0; i < n; ++i) fn(i);
            return;
        }
        std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
        if (!busy.owns_lock()) {
            for (int i = 0; i < n; ++i) fn(i);
            return;
        }
        grow(n - 1);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &fn;
            done_.store(0);
            parts_.store(n);
            next_.store(0);
            ++generation_;
        }
        start_.notify_all();
        work();
        std::unique_lock<std::mutex> lock(mutex_);
        finished_.wait(lock, [&] { return done_.load() == parts_.load() && active_ == 0; });
        job_ = nullptr;
    }

  private:
    void grow(int workers) {
        while (started_ < workers) {
            std::thread([this] { loop(); }).detach();
            ++started_;
        }
    }

    void loop() {
        uint64_t seen = 0;
        for (;;) {
            {
                std::unique_lock<std::mutex> lock(mutex_);
                start_.wait(lock, [&] { return generation_ != seen; });
                seen = generation_;
                ++active_;
            }
            work();
            std::lock_guard<std::mutex> lock(mutex_);
            --active_;
            finished_.notify_all();
        }
    }

    void work() {
        for (;;) {
            const int i = next_.fetch_add(1);
            if (i >= parts_.load()) return;
            (*job_)(i);
            if (done_.fetch_add(1) + 1 == parts_.load()) {
                std::lock_guard<std::mutex> lock(mutex_);
                finished_.notify_all();
            }
        }
    }

    std::mutex busy_;   // held by the caller of run() for the whole job
    std::mutex mutex_;  // guards generation_, active_ and the condition variables
    std::condition_variable start_, finished_;
    const std::function<void(int)>* job_ = nullptr;
    std::atomic<int> next_{0}, done_{0}, parts_{0};
    uint64_t generation_ = 0;
    int active_ = 0;  // workers inside work()
    int started_ = 0;
};

}  // namespace lstm_cpu
