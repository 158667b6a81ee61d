// MhcHead: residual [T,n,d] -> y [T,d] (contract: shared/spec/mhc_ops.md).
// Kernel call, plugin and creator.
#include "mhcPluginCommon.h"

#include <exception>
#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcHead";

std::vector<FieldSpec> const kFIELDS = {
    {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
};

// Inputs: residual [T,n,d], hc_fn [n, n*d], hc_scale [1], hc_base [n]. Output: y [T,d].
constexpr int32_t kNB_IN = 4;
constexpr int32_t kNB_OUT = 1;

class MhcHeadPlugin final : public MhcPlugin<MhcHeadPlugin, kNB_IN, kNB_OUT, 0>
{
public:
    explicit MhcHeadPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
        mParams.rms_eps = fields.getFloat("rms_eps");
        mParams.eps = fields.getFloat("eps");
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (!isResidualType(inputTypes[0]))
        {
            logError(std::string(kNAME) + ": residual must be float32, float16 or bfloat16, got "
                + dataTypeName(inputTypes[0]));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        nvinfer1::DimsExprs const& res = inputs[0];
        if (res.nbDims != 3 || inputs[1].nbDims != 2 || inputs[2].nbDims != 1 || inputs[3].nbDims != 1)
        {
            logError(std::string(kNAME) + ": expected residual [T,n,d], hc_fn [n,K], hc_scale [1], hc_base [n]");
            return -1;
        }
        if (res.d[1]->isConstant() && res.d[2]->isConstant() && inputs[1].d[0]->isConstant()
            && inputs[1].d[1]->isConstant())
        {
            int64_t const n = res.d[1]->getConstantValue();
            int64_t const d = res.d[2]->getConstantValue();
            int64_t const m = inputs[1].d[0]->getConstantValue();
            int64_t const k = inputs[1].d[1]->getConstantValue();
            if (m != n || k != n * d)
            {
                logError(std::string(kNAME) + ": hc_fn is [" + std::to_string(m) + ", " + std::to_string(k)
                    + "], expected [n, n*d] = [" + std::to_string(n) + ", " + std::to_string(n * d)
                    + "] for residual n=" + std::to_string(n) + ", d=" + std::to_string(d));
                return -1;
            }
        }
        outputs[0].nbDims = 2;
        outputs[0].d[0] = res.d[0];
        outputs[0].d[1] = res.d[2];
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
    {
        if (nbInputs != kNB_IN || nbOutputs != kNB_OUT || pos < 0 || pos >= kNB_IN + kNB_OUT)
        {
            return false;
        }
        nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
        if (t.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        switch (pos)
        {
        case 0: return isResidualType(t.type);
        case 4: return t.type == inOut[0].desc.type; // y follows residual
        default: return t.type == nvinfer1::DataType::kFLOAT;
        }
    }

    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override
    {
        if (nbInputs != kNB_IN || inputs[0].max.nbDims != 3)
        {
            return 0;
        }
        nvinfer1::Dims const& mx = inputs[0].max;
        return mhcHeadWorkspaceSize(mx.d[0], static_cast<int32_t>(mx.d[1]), static_cast<int32_t>(mx.d[2]),
            toMhcDtype(inputs[0].desc.type));
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override
    {
        nvinfer1::Dims const& dims = inputDesc[0].dims;
        int64_t const t = dims.d[0];
        int32_t const n = static_cast<int32_t>(dims.d[1]);
        int32_t const d = static_cast<int32_t>(dims.d[2]);
        mhcDtype_t const dtype = toMhcDtype(inputDesc[0].type);
        if (t == 0)
        {
            return 0;
        }
        mhcStatus_t const st = mhcHead(inputs[0], static_cast<float const*>(inputs[1]),
            static_cast<float const*>(inputs[2]), static_cast<float const*>(inputs[3]), outputs[0], t, n, d, dtype,
            &mParams, workspace, mhcHeadWorkspaceSize(t, n, d, dtype), stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcHead", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcHeadParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcHeadCreator() noexcept
{
    static MhcCreator<MhcHeadPlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
