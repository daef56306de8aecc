// N-body softened gravity (Plummer softening, G = 1) with keops, from C++17 through keops.h:
//
//   acceleration  a_i = sum_j m_j (y_j - x_i) (|x_i - y_j|^2 + eps2)^-3/2      (direct formula)
//                     = -grad_x phi_i                                           (Grad formula)
//   potential   phi_i = sum_j -m_j / sqrt(|x_i - y_j|^2 + eps2)
//   neighbours        = the K = 8 smallest |x_i - y_j|^2 (ArgKMin)
//
// x and y are the same particles (M = N); the j = i term of the force is 0 (y - x = 0), that of
// the potential is -m_i / eps, which the energy takes out.
//
// 1. Check, float64, N = 200: both forces, the potential and the neighbour list against plain
//    double loops and a sort.
// 2. Simulate, float32, N = 2000: a uniform sphere with virial velocities, kick-drift-kick
//    leapfrog; the first forces are checked against a double loop, the relative energy drift is
//    reported. The kernels are created once and reused at every step.
//
// Usage: nbody [auto|cpu|gpu]  (the backend; default auto). Exit status 0 when every check
// passes, 1 otherwise.
#include <keops.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

namespace {

constexpr int N_CHECK = 200, N_SIM = 2000, STEPS = 200, REPORT_EVERY = 50, K_NEIGHBOURS = 8;
constexpr double EPS2 = 0.05 * 0.05; // softening length 0.05: 1/8 of the mean spacing at N_SIM
constexpr double PI = 3.14159265358979323846;
constexpr double DT = 0.005; // 1/200 of the sphere's dynamical time (R = M = G = 1)

// Float64 kernels against double loops: every pair term is within a few ulp (2^-52 ~ 2.2e-16;
// x**-1.5 lowers to sqrt, a division and products, within (m + 2) ulp), and a sum of 200 terms
// adds at most ~200 ulp of the sum of |terms|. The error is normwise (max |out - ref| / max
// |ref|), and sum |terms| is within ~10x max |a| here, so errors stay below ~1e-12; 1e-10
// leaves room without hiding a wrong formula (which errs by O(1)).
constexpr double TOL_F64 = 1e-10;
// Float32 kernels (same float inputs) against a double loop: float32 rounding (2^-24 ~ 6e-8)
// of a few ulp per term, block sums of 2000 terms (error ~ (block + blocks) * 2^-24 ~ 90 *
// 6e-8 ~ 5e-6 of sum |terms|, itself within ~10x max |a|; in practice a random walk far below),
// normwise.
constexpr double TOL_F32 = 1e-4;
// Leapfrog is symplectic: its energy error is O(dt^2), bounded rather than drifting for a given
// orbit; here it grows as the sphere contracts and encounters tighten, to 5e-6 by t = 1; a force 5%
// off the potential's gradient drifts by 3e-2 by t = 1 (tried), so 1e-3 flags an inconsistent force
// without failing on float32 noise.
constexpr double MAX_DRIFT = 1e-3;

const char *const FORCE = "m*(y-x)*(SqDist(x,y)+eps2)**-1.5";
const char *const POTENTIAL = "-m*Rsqrt(SqDist(x,y)+eps2)";
// Grad(f, x, u) is sum_j u_i^T df/dx_i: u is a Vi of f's dim (1) holding ones.
const std::string GRAD_FORCE = std::string("-Grad(") + POTENTIAL + ", x, u)";

const char *const ALIASES[] = {"x = Vi(3)", "y = Vj(3)", "m = Vj(1)", "eps2 = Pm(1)", "u = Vi(1)"};

[[noreturn]] void die(const char *what) {
  std::fprintf(stderr, "nbody: %s: %s\n", what, keops_last_error());
  std::exit(1);
}

template <class T> constexpr keops_dtype dtype_of() {
  return sizeof(T) == 4 ? KEOPS_FLOAT32 : KEOPS_FLOAT64;
}

// One compiled reduction, created once and run many times.
class Kernel {
public:
  Kernel(keops_context *ctx, keops_dtype dt, const char *name, const char *formula, int n_aliases,
         const char *reduction = nullptr, int k = 0)
      : name_(name) {
    keops_kernel_desc d = keops_kernel_desc_init();
    d.formula = formula;
    d.aliases = ALIASES;
    d.n_aliases = n_aliases;
    d.reduction = reduction;
    d.axis = KEOPS_AXIS_J; // one output row per particle i, reduced over j (required: no default)
    d.k = k;
    d.dtype = dt;
    if (keops_kernel_create(ctx, &d, &k_) != KEOPS_OK) die(name);
  }
  ~Kernel() { keops_kernel_destroy(k_); }
  Kernel(const Kernel &) = delete;
  Kernel &operator=(const Kernel &) = delete;

  // args: x, y, m, eps2[, u] as the aliases list them.
  void run(int64_t n, const std::vector<const void *> &args, void *out,
           const keops_run_options &opts) const {
    if (static_cast<int>(args.size()) != keops_kernel_arg_count(k_)) {
      std::fprintf(stderr, "nbody: %s: %zu arguments for a kernel of %d\n", name_, args.size(),
                   keops_kernel_arg_count(k_));
      std::exit(1);
    }
    void *outs[] = {out};
    if (keops_kernel_run(k_, n, n, args.data(), outs, &opts) != KEOPS_OK) die(name_);
  }
  keops_backend backend(const keops_run_options &opts) const {
    return keops_kernel_backend(k_, &opts);
  }

private:
  const char *name_;
  keops_kernel *k_ = nullptr;
};

// ---- particles ------------------------------------------------------------------------------

// splitmix64: a fixed seed makes every run see the same particles.
struct Rng {
  uint64_t s = 0x9E3779B97F4A7C15ull;
  double uniform() { // [0, 1)
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
  }
  double normal() { return std::sqrt(-2 * std::log(1 - uniform())) * std::cos(2 * PI * uniform()); }
};

template <class T> struct Particles {
  int n;
  std::vector<T> x, v, m; // n x 3, n x 3, n
};

// Uniform sphere of radius 1 and mass 1 (U = -3/5 unsoftened), Gaussian velocities of
// dispersion sqrt(0.1) per axis: K = 0.15 = |U| / 4, half the virial value, so the sphere
// contracts and particles meet (the softening is exercised), without a violent collapse.
template <class T> Particles<T> make_sphere(int n, uint64_t seed) {
  Rng r;
  r.s = seed;
  Particles<T> p{n, std::vector<T>(3 * n), std::vector<T>(3 * n), std::vector<T>(n, T(1) / n)};
  for (int i = 0; i < n; i++) {
    double c[3], r2;
    do {
      for (double &u : c) u = 2 * r.uniform() - 1;
      r2 = c[0] * c[0] + c[1] * c[1] + c[2] * c[2];
    } while (r2 > 1);
    for (int a = 0; a < 3; a++) {
      p.x[3 * i + a] = static_cast<T>(c[a]);
      p.v[3 * i + a] = static_cast<T>(std::sqrt(0.1) * r.normal());
    }
  }
  return p;
}

// ---- the double loops the kernels are checked against ---------------------------------------

template <class T> double sqdist(const Particles<T> &p, int i, int j) {
  double s = 0;
  for (int a = 0; a < 3; a++) {
    double d = static_cast<double>(p.x[3 * j + a]) - p.x[3 * i + a];
    s += d * d;
  }
  return s;
}

template <class T> std::vector<double> ref_accel(const Particles<T> &p, double eps2) {
  std::vector<double> acc(3 * p.n, 0.0);
  for (int i = 0; i < p.n; i++)
    for (int j = 0; j < p.n; j++) {
      double w = p.m[j] / std::pow(sqdist(p, i, j) + eps2, 1.5);
      for (int a = 0; a < 3; a++)
        acc[3 * i + a] += w * (static_cast<double>(p.x[3 * j + a]) - p.x[3 * i + a]);
    }
  return acc;
}

template <class T> std::vector<double> ref_potential(const Particles<T> &p, double eps2) {
  std::vector<double> phi(p.n, 0.0);
  for (int i = 0; i < p.n; i++)
    for (int j = 0; j < p.n; j++) phi[i] -= p.m[j] / std::sqrt(sqdist(p, i, j) + eps2);
  return phi;
}

// The K nearest j of each i, ascending, ties to the smaller index (as keops breaks them).
template <class T> std::vector<int64_t> ref_neighbours(const Particles<T> &p, int K) {
  std::vector<int64_t> out(static_cast<size_t>(p.n) * K);
  std::vector<int> idx(p.n);
  std::vector<double> d(p.n);
  for (int i = 0; i < p.n; i++) {
    for (int j = 0; j < p.n; j++) d[j] = sqdist(p, i, j);
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                      [&](int a, int b) { return d[a] < d[b] || (d[a] == d[b] && a < b); });
    for (int k = 0; k < K; k++) out[static_cast<size_t>(i) * K + k] = idx[k];
  }
  return out;
}

// ---- checks -----------------------------------------------------------------------------------

template <class T> double normwise_err(const std::vector<T> &out, const std::vector<double> &ref) {
  double num = 0, den = 0;
  for (size_t k = 0; k < ref.size(); k++) {
    double d = std::fabs(static_cast<double>(out[k]) - ref[k]);
    if (!(d <= num)) num = d; // NaN propagates
    den = std::max(den, std::fabs(ref[k]));
  }
  return den > 0 ? num / den : num;
}

bool report(const char *what, double err, double tol) {
  bool ok = err <= tol; // NaN fails
  std::printf("  %-40s max error %.3g (tolerance %.0e): %s\n", what, err, tol,
              ok ? "PASS" : "FAIL");
  return ok;
}

// Rows whose neighbour list differs from the sort. Distances that differ only by rounding
// (keops's float64 SqDist may round otherwise than the loop) may swap places: within 1e-12
// relative they count as a tie, not a mismatch.
template <class T>
int neighbour_mismatches(const Particles<T> &p, const std::vector<int64_t> &got,
                         const std::vector<int64_t> &want, int K) {
  int bad = 0;
  for (int i = 0; i < p.n; i++) {
    bool row_ok = true;
    for (int k = 0; k < K; k++) {
      int64_t g = got[static_cast<size_t>(i) * K + k], w = want[static_cast<size_t>(i) * K + k];
      if (g == w) continue;
      if (g < 0 || g >= p.n) {
        row_ok = false;
        continue;
      }
      double dg = sqdist(p, i, static_cast<int>(g)), dw = sqdist(p, i, static_cast<int>(w));
      if (std::fabs(dg - dw) > 1e-12 * dw) row_ok = false;
    }
    bad += !row_ok;
  }
  return bad;
}

// The simulation's kernels: forces and potential, compiled once for the dtype.
template <class T> struct Gravity {
  Kernel force, grad_force, potential;
  explicit Gravity(keops_context *ctx)
      : force(ctx, dtype_of<T>(), "direct force", FORCE, 4),
        grad_force(ctx, dtype_of<T>(), "Grad force", GRAD_FORCE.c_str(), 5),
        potential(ctx, dtype_of<T>(), "potential", POTENTIAL, 4) {}
};

template <class T> struct Inputs {
  const Particles<T> &p;
  T eps2;
  std::vector<T> ones;
  Inputs(const Particles<T> &pp, double e) : p(pp), eps2(static_cast<T>(e)), ones(pp.n, T(1)) {}
  std::vector<const void *> args(bool with_u) const {
    std::vector<const void *> a{p.x.data(), p.x.data(), p.m.data(), &eps2};
    if (with_u) a.push_back(ones.data());
    return a;
  }
};

// Checks both forces (and, when `all`, the potential) of the kernels against the loops.
template <class T>
bool check_forces(const Gravity<T> &g, const Particles<T> &p, const keops_run_options &opts,
                  double tol, bool all) {
  Inputs<T> in(p, EPS2);
  std::vector<T> acc(3 * p.n), acc_grad(3 * p.n), phi(p.n);
  g.force.run(p.n, in.args(false), acc.data(), opts);
  g.grad_force.run(p.n, in.args(true), acc_grad.data(), opts);
  std::vector<double> ref = ref_accel(p, EPS2);
  bool ok = report("direct force vs double loop", normwise_err(acc, ref), tol);
  ok &= report("Grad(potential) force vs double loop", normwise_err(acc_grad, ref), tol);
  if (all) {
    g.potential.run(p.n, in.args(false), phi.data(), opts);
    ok &= report("potential vs double loop", normwise_err(phi, ref_potential(p, EPS2)), tol);
  }
  return ok;
}

// ---- 1. the float64 check ---------------------------------------------------------------------

bool check_small(keops_context *ctx, const keops_run_options &opts) {
  std::printf("check: N = %d, float64, eps = %g\n", N_CHECK, std::sqrt(EPS2));
  Particles<double> p = make_sphere<double>(N_CHECK, 1);
  Gravity<double> g(ctx);
  std::printf("  runs on: %s\n", keops_backend_describe(ctx, g.force.backend(opts)));
  bool ok = check_forces(g, p, opts, TOL_F64, true);

  Kernel knn(ctx, KEOPS_FLOAT64, "neighbour list", "SqDist(x,y)", 2, "ArgKMin", K_NEIGHBOURS);
  std::vector<int64_t> nb(static_cast<size_t>(p.n) * K_NEIGHBOURS);
  knn.run(p.n, {p.x.data(), p.x.data()}, nb.data(), opts);
  int bad = neighbour_mismatches(p, nb, ref_neighbours(p, K_NEIGHBOURS), K_NEIGHBOURS);
  std::printf("  %-40s %d of %d rows differ: %s\n", "ArgKMin K=8 vs sort", bad, p.n,
              bad ? "FAIL" : "PASS");
  return ok && bad == 0;
}

// ---- 2. the float32 simulation ----------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Total energy: kinetic plus the pairs' potential, each pair once, the self terms -m_i^2/eps
// (which keops's sum includes) taken out. Accumulated in double.
template <class T>
double energy(const Gravity<T> &g, const Particles<T> &p, const keops_run_options &opts,
              std::vector<T> &phi) {
  Inputs<T> in(p, EPS2);
  g.potential.run(p.n, in.args(false), phi.data(), opts);
  double kin = 0, pot = 0;
  for (int i = 0; i < p.n; i++) {
    double v2 = 0;
    for (int a = 0; a < 3; a++) v2 += static_cast<double>(p.v[3 * i + a]) * p.v[3 * i + a];
    kin += 0.5 * p.m[i] * v2;
    pot += 0.5 * p.m[i] * (phi[i] + p.m[i] / std::sqrt(static_cast<double>(in.eps2)));
  }
  return kin + pot;
}

bool simulate(keops_context *ctx, const keops_run_options &opts) {
  using T = float;
  std::printf("\nsimulation: N = %d, float32, kick-drift-kick leapfrog, dt = %g, %d steps\n", N_SIM,
              DT, STEPS);
  Particles<T> p = make_sphere<T>(N_SIM, 2);
  Gravity<T> g(ctx);
  bool ok = check_forces(g, p, opts, TOL_F32, false);

  Inputs<T> in(p, EPS2);
  const std::vector<const void *> args = in.args(false); // x moves in place: same pointers
  std::vector<T> acc(3 * p.n), phi(p.n);
  const T dt = static_cast<T>(DT), half = static_cast<T>(DT / 2);
  double e0 = energy(g, p, opts, phi), worst = 0;
  auto t0 = std::chrono::steady_clock::now();
  g.force.run(p.n, args, acc.data(), opts);
  for (int s = 1; s <= STEPS; s++) {
    for (int k = 0; k < 3 * p.n; k++) p.v[k] += half * acc[k];
    for (int k = 0; k < 3 * p.n; k++) p.x[k] += dt * p.v[k];
    g.force.run(p.n, args, acc.data(), opts);
    for (int k = 0; k < 3 * p.n; k++) p.v[k] += half * acc[k];
    if (s % REPORT_EVERY == 0) {
      double drift = std::fabs((energy(g, p, opts, phi) - e0) / e0);
      worst = std::max(worst, drift);
      std::printf("  t = %.2f  relative energy drift %.3g\n", s * DT, drift);
    }
  }
  double t = seconds_since(t0);
  std::printf("  %d force evaluations in %.3f s (%.2f G pairs/s, with the energies)\n", STEPS + 1,
              t, (STEPS + 1.0) * p.n * p.n / t * 1e-9);
  bool drift_ok = worst <= MAX_DRIFT;
  std::printf("  %-40s %.3g (bound %.0e): %s\n", "max relative energy drift", worst, MAX_DRIFT,
              drift_ok ? "PASS" : "FAIL");
  return ok && drift_ok;
}

} // namespace

int main(int argc, char **argv) {
  keops_run_options opts = keops_run_options_init();
  if (argc > 1) {
    static const char *const names[] = {"auto", "cpu", "gpu"};
    int b = -1;
    for (int k = 0; k < 3; k++)
      if (std::strcmp(argv[1], names[k]) == 0) b = k;
    if (b < 0 || argc > 2) {
      std::fprintf(stderr, "usage: nbody [auto|cpu|gpu]\n");
      return 2;
    }
    opts.backend = static_cast<keops_backend>(b);
  }
  keops_context *ctx = nullptr;
  if (keops_context_create(&ctx) != KEOPS_OK) die("keops_context_create");
  bool ok = check_small(ctx, opts);
  ok &= simulate(ctx, opts);
  std::printf("nbody: %s\n", ok ? "PASS" : "FAIL");
  keops_context_destroy(ctx);
  return ok ? 0 : 1;
}
