// thread_pool.hpp -- a small persistent pool for the CPU core's parallel parts.
//
// run(n, fn) calls fn(0) .. fn(n-1), the caller taking parts too, and returns when all are
// done and no worker is still inside the job (so no worker can take a part of the next one).
// Parts are handed out by an atomic counter, so a worker that wakes late (or never, as in a
// forked child) costs nothing: the caller finishes the job alone. One job at a time: a
// second caller that finds the pool busy runs its parts itself. Workers are detached and
// never joined (the pool lives until the process exits), so neither interpreter shutdown nor
// fork can block on them.
//
// Waiting: a thread blocked on a condition variable can take milliseconds to run again on a
// virtual machine (its idle vCPU halts; measured here: 20 us typically, 3 ms at times), and a
// part that starts that late runs on the caller after its own, which makes the call serial.
// So a worker spins for kSpin after its part before it blocks (as OpenMP runtimes do; the
// calls of a loop and the parallel parts of one call come closer together than that), and
// the caller spins as long for the workers' parts before it blocks.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define LSTM_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define LSTM_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define LSTM_CPU_RELAX() std::this_thread::yield()
#endif

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
            generation_.fetch_add(1);
        }
        start_.notify_all();
        work();
        const auto finished = [&] { return done_.load() == parts_.load() && active_.load() == 0; };
        spin_until(finished);
        std::unique_lock<std::mutex> lock(mutex_);
        finished_.wait(lock, finished);
        job_ = nullptr;
    }

  private:
    static constexpr std::chrono::microseconds kSpin{1000};

    // Spins until done() or kSpin has passed.
    template <typename Done> static void spin_until(Done done) {
        const auto until = std::chrono::steady_clock::now() + kSpin;
        for (unsigned i = 1; !done(); ++i) {
            LSTM_CPU_RELAX();
            if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) return;
        }
    }

    void grow(int workers) {
        while (started_ < workers) {
            std::thread([this] { loop(); }).detach();
            ++started_;
        }
    }

    void loop() {
        uint64_t seen = 0;
        for (;;) {
            const auto started = [&] { return generation_.load() != seen; };
            spin_until(started);
            {
                std::unique_lock<std::mutex> lock(mutex_);
                start_.wait(lock, started);
                seen = generation_.load();
                active_.fetch_add(1);
            }
            work();
            {
                std::lock_guard<std::mutex> lock(mutex_);
                active_.fetch_sub(1);
            }
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
    std::mutex mutex_;  // orders the job's publication and active_ with the condition variables
    std::condition_variable start_, finished_;
    const std::function<void(int)>* job_ = nullptr;
    std::atomic<int> next_{0}, done_{0}, parts_{0};
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> active_{0};  // workers inside work()
    int started_ = 0;
};

}  // namespace lstm_cpu
