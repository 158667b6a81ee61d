// What the files of mhc_plugin_harness share: the TensorRT side they play
// (logger, expression builder, resource context), the ops as the harness
// expects them, the plugin library and the run mode's arguments. The harness's
// usage and exit status: mhcPluginHarness.cpp.
#pragma once

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace nvinfer1;

namespace mhcHarness
{
extern int gFailures;

// Prints PASS/FAIL and the check; a failure is counted in gFailures.
void check(bool ok, std::string const& what);

// ---- the TensorRT side: logger (its finder and the registry: mhcPluginHarness.cpp) --
class HarnessLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            mMessages.emplace_back(msg);
        }
        if (severity <= Severity::kERROR || mVerbose)
        {
            std::printf("  [plugin log %d] %s\n", static_cast<int>(severity), msg);
        }
    }
    std::string takeMessages()
    {
        std::string all;
        for (auto const& m : mMessages)
        {
            all += m + "\n";
        }
        mMessages.clear();
        return all;
    }
    bool mVerbose{false};

private:
    std::vector<std::string> mMessages;
};

extern HarnessLogger gLogger;

// ---- the TensorRT side: expression builder ------------------------------------
// Each expression carries the value it has for the concrete T being checked
// and whether TensorRT would treat it as a build-time constant. T is symbolic:
// a plugin that asks for its constant value gets INT64_MIN, as from TensorRT.
class HarnessDimExpr : public IDimensionExpr
{
    struct Impl : public apiv::VDimensionExpr
    {
        bool isConstant() const override
        {
            return constant;
        }
        int64_t getConstantValue() const override
        {
            return constant ? value : std::numeric_limits<int64_t>::min();
        }
        bool isSizeTensor() const override
        {
            return false;
        }
        int64_t value{0};
        bool constant{true};
    };

public:
    HarnessDimExpr(int64_t value, bool constant)
    {
        mOwn.value = value;
        mOwn.constant = constant;
        mImpl = &mOwn;
    }
    ~HarnessDimExpr() noexcept override = default;
    int64_t value() const
    {
        return mOwn.value;
    }

private:
    Impl mOwn;
};

class HarnessExprBuilder : public IExprBuilder
{
    struct Impl : public apiv::VExprBuilder
    {
        IDimensionExpr const* constant(int64_t value) override
        {
            return owner->make(value, true);
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            // Every expression a plugin receives or makes was made here.
            int64_t const a = static_cast<HarnessDimExpr const&>(first).value();
            int64_t const b = static_cast<HarnessDimExpr const&>(second).value();
            int64_t v = 0;
            switch (op)
            {
            case DimensionOperation::kSUM: v = a + b; break;
            case DimensionOperation::kPROD: v = a * b; break;
            case DimensionOperation::kMAX: v = std::max(a, b); break;
            case DimensionOperation::kMIN: v = std::min(a, b); break;
            case DimensionOperation::kSUB: v = a - b; break;
            case DimensionOperation::kEQUAL: v = a == b; break;
            case DimensionOperation::kLESS: v = a < b; break;
            case DimensionOperation::kFLOOR_DIV: v = b ? (a / b - ((a % b != 0) && ((a < 0) != (b < 0)))) : 0; break;
            case DimensionOperation::kCEIL_DIV: v = b ? (a + b - 1) / b : 0; break;
            }
            return owner->make(v, first.isConstant() && second.isConstant());
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            ++owner->sizeTensorRequests;
            return nullptr;
        }
        HarnessExprBuilder* owner{nullptr};
    };

public:
    HarnessExprBuilder()
    {
        mOwn.owner = this;
        mImpl = &mOwn;
    }
    ~HarnessExprBuilder() noexcept override = default;
    IDimensionExpr const* make(int64_t value, bool constant)
    {
        mExprs.push_back(std::make_unique<HarnessDimExpr>(value, constant));
        return mExprs.back().get();
    }
    int32_t sizeTensorRequests{0};

private:
    Impl mOwn;
    std::deque<std::unique_ptr<HarnessDimExpr>> mExprs;
};

class HarnessResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    ~HarnessResourceContext() noexcept override = default;
};

// ---- the ops as the harness expects them (shared/spec/mhc_ops.md) ------------
// Shapes are strings of dimension codes: T tokens, n streams, d hidden,
// M = (2+n)*n, K = n*d, or a digit for a constant.
struct TensorSpec
{
    char const* name;
    char const* shape;
    bool residualType; // else float32
};

struct FieldExpect
{
    char const* name;
    PluginFieldType type;
    enum Rule
    {
        kEPS,
        kPOSITIVE,
        kITERS
    } rule;
};

struct OpSpec
{
    char const* key;
    char const* pluginName;
    std::vector<TensorSpec> inputs;
    std::vector<TensorSpec> outputs;
    std::vector<FieldExpect> fields;
};

extern std::vector<OpSpec> const kOPS;

int64_t dimValue(char code, int64_t t, int64_t n, int64_t d);
Dims dimsOf(TensorSpec const& s, int64_t t, int64_t n, int64_t d);
int64_t volume(Dims const& d);
size_t elemSize(DataType t);
char const* typeName(DataType t);

// ---- the plugin library --------------------------------------------------------
struct Library
{
    void* handle{nullptr};
    std::vector<IPluginCreatorV3One*> creators;
};

IPluginCreatorV3One* findCreator(Library const& lib, char const* name);

// Owns a PluginFieldCollection the way a parser or TensorRT's deserializer does.
class FieldSet
{
public:
    FieldSet() = default;
    FieldSet(FieldSet const&) = delete;
    void add(std::string const& name, PluginFieldType type, void const* data, int32_t length, size_t bytes)
    {
        mNames.push_back(std::make_unique<std::string>(name));
        mData.push_back(std::make_unique<std::vector<uint8_t>>(
            static_cast<uint8_t const*>(data), static_cast<uint8_t const*>(data) + bytes));
        mFields.emplace_back(mNames.back()->c_str(), mData.back()->data(), type, length);
    }
    void addFloat(std::string const& name, float v)
    {
        add(name, PluginFieldType::kFLOAT32, &v, 1, sizeof(v));
    }
    void addInt(std::string const& name, int32_t v)
    {
        add(name, PluginFieldType::kINT32, &v, 1, sizeof(v));
    }
    void addString(std::string const& name, std::string const& v)
    {
        add(name, PluginFieldType::kCHAR, v.c_str(), static_cast<int32_t>(v.size()), v.size());
    }
    // Deep copy: what TensorRT writes into the engine and reads back.
    void copyFrom(PluginFieldCollection const* fc)
    {
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            size_t unit = 1;
            if (f.type == PluginFieldType::kFLOAT32 || f.type == PluginFieldType::kINT32)
            {
                unit = 4;
            }
            add(f.name, f.type, f.data, f.length, unit * static_cast<size_t>(f.length));
        }
    }
    PluginFieldCollection const* get()
    {
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
        return &mFc;
    }
    PluginField const* find(std::string const& name) const
    {
        for (auto const& f : mFields)
        {
            if (name == f.name)
            {
                return &f;
            }
        }
        return nullptr;
    }

private:
    std::vector<std::unique_ptr<std::string>> mNames;
    std::vector<std::unique_ptr<std::vector<uint8_t>>> mData;
    std::vector<PluginField> mFields;
    PluginFieldCollection mFc{};
};

template <typename T>
T* capability(IPluginV3* p, PluginCapabilityType type, char const* kind)
{
    IPluginCapability* c = p ? p->getCapabilityInterface(type) : nullptr;
    bool const ok = c != nullptr && std::strcmp(c->getInterfaceInfo().kind, kind) == 0;
    check(ok, std::string("capability ") + kind);
    return ok ? static_cast<T*>(c) : nullptr;
}

// ---- mode: run (mhcHarnessRun.cpp and its phases) ----------------------------------
struct RunArgs
{
    std::string op;
    DataType dtype{DataType::kFLOAT};
    int64_t n{4};
    int64_t d{64};
    std::vector<int64_t> ts;
    std::string dir;
    std::vector<std::pair<std::string, std::string>> attrs;
    bool stringFields{false};
    bool gpu{true};
};

#define CUDA_CHECK(call)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const e_ = (call);                                                                                 \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            check(false, std::string(#call) + ": " + cudaGetErrorString(e_));                                          \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

inline DataType typeOf(TensorSpec const& s, DataType residual)
{
    return s.residualType ? residual : DataType::kFLOAT;
}

int modeRun(Library const& lib, RunArgs const& a);
} // namespace mhcHarness
