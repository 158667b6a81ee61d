#include "mhcPluginCommon.h"
#include "mhcRegistration.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <sstream>

namespace mhc
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

void logAt(nvinfer1::ILogger::Severity severity, std::string const& msg) noexcept
{
    try
    {
        std::string const line = "[mhc plugins] " + msg;
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder ? finder->findLogger() : nullptr;
        if (logger)
        {
            logger->log(severity, line.c_str());
        }
        else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
        {
            // Without TensorRT's logger (a bare dlopen) errors must still be seen.
            std::fprintf(stderr, "%s\n", line.c_str());
        }
    }
    catch (...)
    {
    }
}

bool isStringField(char const* name)
{
    return std::strcmp(name, "plugin_namespace") == 0 || std::strcmp(name, "plugin_version") == 0;
}

std::string fieldTypeName(nvinfer1::PluginFieldType t)
{
    switch (t)
    {
    case nvinfer1::PluginFieldType::kFLOAT16: return "kFLOAT16";
    case nvinfer1::PluginFieldType::kFLOAT32: return "kFLOAT32";
    case nvinfer1::PluginFieldType::kFLOAT64: return "kFLOAT64";
    case nvinfer1::PluginFieldType::kINT8: return "kINT8";
    case nvinfer1::PluginFieldType::kINT16: return "kINT16";
    case nvinfer1::PluginFieldType::kINT32: return "kINT32";
    case nvinfer1::PluginFieldType::kCHAR: return "kCHAR";
    case nvinfer1::PluginFieldType::kDIMS: return "kDIMS";
    case nvinfer1::PluginFieldType::kBF16: return "kBF16";
    case nvinfer1::PluginFieldType::kINT64: return "kINT64";
    default: return "type " + std::to_string(static_cast<int32_t>(t));
    }
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    // ILoggerFinder and ILogger changed their vtables between TensorRT 10 and 11
    // (11 derives both from IVersionedInterface; TensorRT-RTX has 11's): a finder
    // of other interfaces must never be called. Messages then go to stderr.
    int32_t const running = finder ? runningTensorRTMajor(finder, nullptr) : NV_TENSORRT_MAJOR;
    if (interfaceMajor(running) != NV_TENSORRT_MAJOR)
    {
        try
        {
            std::fprintf(stderr,
                "[mhc plugins] this library was built against TensorRT %d headers but the TensorRT loading it "
                "is %s; its logger is not used (messages go to stderr). Load libmhc_trt_plugins_trt%d.so "
                "instead.\n",
                NV_TENSORRT_MAJOR, running < 0 ? "of unknown version" : describeTensorRT(running).c_str(),
                running < 0 ? NV_TENSORRT_MAJOR : interfaceMajor(running));
        }
        catch (...)
        {
        }
        gLoggerFinder.store(nullptr);
        return;
    }
    gLoggerFinder.store(finder);
}

void logError(std::string const& msg) noexcept
{
    logAt(nvinfer1::ILogger::Severity::kERROR, msg);
}

void logWarning(std::string const& msg) noexcept
{
    logAt(nvinfer1::ILogger::Severity::kWARNING, msg);
}

void logVerbose(std::string const& msg) noexcept
{
    logAt(nvinfer1::ILogger::Severity::kVERBOSE, msg);
}

// ---- Fields ----------------------------------------------------------------

Fields::Fields(std::vector<FieldSpec> const* specs)
    : mSpecs(specs)
    , mValues(specs->size())
{
    for (size_t k = 0; k < specs->size(); ++k)
    {
        FieldSpec const& s = (*specs)[k];
        if (s.kind == FieldKind::kFLOAT)
        {
            mValues[k].f = static_cast<float>(s.defaultValue);
        }
        else
        {
            mValues[k].i = static_cast<int32_t>(s.defaultValue);
        }
    }
}

// The serialized view points into this object, so copies rebuild it lazily.
Fields::Fields(Fields const& other)
    : mSpecs(other.mSpecs)
    , mValues(other.mValues)
{
}

Fields& Fields::operator=(Fields const& other)
{
    mSpecs = other.mSpecs;
    mValues = other.mValues;
    mSerialized.clear();
    mCollection = {};
    return *this;
}

int32_t Fields::indexOf(char const* name) const
{
    for (size_t k = 0; k < mSpecs->size(); ++k)
    {
        if (std::strcmp((*mSpecs)[k].name, name) == 0)
        {
            return static_cast<int32_t>(k);
        }
    }
    return -1;
}

bool Fields::parse(char const* pluginName, nvinfer1::PluginFieldCollection const* fc, std::string* error)
{
    auto fail = [&](std::string const& msg) {
        *error = std::string(pluginName) + ": " + msg;
        return false;
    };
    if (fc == nullptr || fc->nbFields == 0)
    {
        return true;
    }
    if (fc->nbFields < 0 || fc->fields == nullptr)
    {
        return fail("invalid PluginFieldCollection (nbFields " + std::to_string(fc->nbFields) + ")");
    }
    for (int32_t j = 0; j < fc->nbFields; ++j)
    {
        nvinfer1::PluginField const& pf = fc->fields[j];
        if (pf.name == nullptr)
        {
            return fail("plugin field " + std::to_string(j) + " has no name");
        }
        std::string const name = pf.name;
        if (isStringField(pf.name))
        {
            // The ONNX node carries these so the parser can find the creator;
            // they are accepted when passed on, and must agree with us.
            if (pf.type != nvinfer1::PluginFieldType::kCHAR || (pf.data == nullptr && pf.length > 0))
            {
                return fail("field '" + name + "' must be a kCHAR string, got " + fieldTypeName(pf.type));
            }
            std::string value(static_cast<char const*>(pf.data), pf.data ? static_cast<size_t>(pf.length) : 0);
            value = value.substr(0, value.find('\0'));
            char const* want = name == "plugin_namespace" ? kPLUGIN_NAMESPACE : kPLUGIN_VERSION;
            if (value != want)
            {
                return fail("field '" + name + "' is \"" + value + "\", expected \"" + want + "\"");
            }
            continue;
        }
        int32_t const k = indexOf(pf.name);
        if (k < 0)
        {
            std::string known;
            for (auto const& s : *mSpecs)
            {
                known += (known.empty() ? "" : ", ") + std::string(s.name);
            }
            return fail("unknown field '" + name + "' (expected " + (known.empty() ? "none" : known) + ")");
        }
        FieldSpec const& spec = (*mSpecs)[k];
        nvinfer1::PluginFieldType const want
            = spec.kind == FieldKind::kFLOAT ? nvinfer1::PluginFieldType::kFLOAT32 : nvinfer1::PluginFieldType::kINT32;
        if (pf.type != want)
        {
            return fail("field '" + name + "' must be " + fieldTypeName(want) + ", got " + fieldTypeName(pf.type));
        }
        if (pf.length != 1 || pf.data == nullptr)
        {
            return fail("field '" + name + "' must hold exactly one value, got length " + std::to_string(pf.length));
        }
        std::ostringstream bad;
        if (spec.kind == FieldKind::kFLOAT)
        {
            float v;
            std::memcpy(&v, pf.data, sizeof(v));
            if (!std::isfinite(v))
            {
                bad << "field '" << name << "' must be finite, got " << v;
            }
            else if (spec.rule == FieldRule::kNON_NEGATIVE_FINITE && v < 0.F)
            {
                bad << "field '" << name << "' must be >= 0, got " << v;
            }
            else if (spec.rule == FieldRule::kPOSITIVE_FINITE && !(v > 0.F))
            {
                bad << "field '" << name << "' must be > 0, got " << v;
            }
            mValues[k].f = v;
        }
        else
        {
            int32_t v;
            std::memcpy(&v, pf.data, sizeof(v));
            if (spec.rule == FieldRule::kAT_LEAST_ONE && v < 1)
            {
                bad << "field '" << name << "' must be >= 1, got " << v;
            }
            mValues[k].i = v;
        }
        if (!bad.str().empty())
        {
            return fail(bad.str());
        }
    }
    return true;
}

float Fields::getFloat(char const* name) const
{
    return mValues.at(static_cast<size_t>(indexOf(name))).f;
}

int32_t Fields::getInt(char const* name) const
{
    return mValues.at(static_cast<size_t>(indexOf(name))).i;
}

nvinfer1::PluginFieldCollection const* Fields::serialize()
{
    mSerialized.clear();
    for (size_t k = 0; k < mSpecs->size(); ++k)
    {
        FieldSpec const& s = (*mSpecs)[k];
        bool const isFloat = s.kind == FieldKind::kFLOAT;
        mSerialized.emplace_back(s.name, isFloat ? static_cast<void const*>(&mValues[k].f) : &mValues[k].i,
            isFloat ? nvinfer1::PluginFieldType::kFLOAT32 : nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mSerialized.size());
    mCollection.fields = mSerialized.data();
    return &mCollection;
}

FieldNames::FieldNames(std::vector<FieldSpec> const& specs)
{
    for (auto const& s : specs)
    {
        mFields.emplace_back(s.name, nullptr,
            s.kind == FieldKind::kFLOAT ? nvinfer1::PluginFieldType::kFLOAT32 : nvinfer1::PluginFieldType::kINT32, 1);
    }
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

// ---- dtypes ----------------------------------------------------------------

bool isResidualType(nvinfer1::DataType t) noexcept
{
    return t == nvinfer1::DataType::kFLOAT || t == nvinfer1::DataType::kHALF || t == nvinfer1::DataType::kBF16;
}

mhcDtype_t toMhcDtype(nvinfer1::DataType t) noexcept
{
    switch (t)
    {
    case nvinfer1::DataType::kHALF: return MHC_DTYPE_FLOAT16;
    case nvinfer1::DataType::kBF16: return MHC_DTYPE_BFLOAT16;
    default: return MHC_DTYPE_FLOAT32;
    }
}

char const* dataTypeName(nvinfer1::DataType t) noexcept
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kBF16: return "bfloat16";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kINT64: return "int64";
    case nvinfer1::DataType::kBOOL: return "bool";
    default: return "unsupported";
    }
}

bool profileDesc(char const* plugin, nvinfer1::DynamicPluginTensorDesc const& in, nvinfer1::PluginTensorDesc* out) noexcept
{
    nvinfer1::Dims const& lo = in.min;
    nvinfer1::Dims const& hi = in.max;
    bool fixed = lo.nbDims == hi.nbDims && lo.nbDims >= 1;
    for (int32_t k = 1; fixed && k < hi.nbDims; ++k)
    {
        fixed = lo.d[k] == hi.d[k];
    }
    if (!fixed)
    {
        try
        {
            std::string range;
            for (int32_t k = 0; k < hi.nbDims; ++k)
            {
                range += (k ? ", " : "") + std::to_string(k < lo.nbDims ? lo.d[k] : -1) + ".." + std::to_string(hi.d[k]);
            }
            logError(std::string(plugin) + ": only the first dim (T) may vary within a profile; got [" + range + "]");
        }
        catch (...)
        {
        }
        return false;
    }
    *out = in.desc;
    out->dims = hi;
    return true;
}

int32_t reportKernelFailure(char const* plugin, char const* what, mhcStatus_t status) noexcept
{
    try
    {
        logError(std::string(plugin) + ": " + what + " failed: " + mhcGetStatusString(status) + ": "
            + mhcGetLastErrorMessage());
    }
    catch (...)
    {
    }
    return -1;
}

} // namespace plugin
} // namespace mhc
